"""HDF5Data / HDF5Output: the missing-h5py error, and (with h5py) reading and writing rows."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layers.hdf5 import HDF5DataLayer, HDF5OutputLayer
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.rng import set_random_seed

from .layer_test_template import blob_from, forward, setup_layer

GRADIENT_CHECKED: set[str] = set()  # data in and out: no gradient

H5PY_REASON = "h5py is not installed (the optional 'hdf5' extra: pip install 'pycaffe-lite[hdf5]')"


def test_registered():
    assert LAYERS.get("HDF5Data") is HDF5DataLayer and LAYERS.get("HDF5_DATA") is HDF5DataLayer
    assert LAYERS.get("HDF5Output") is HDF5OutputLayer and LAYERS.get("HDF5_OUTPUT") is HDF5OutputLayer


@pytest.mark.parametrize("text", [
    'name: "h5" type: "HDF5Data" hdf5_data_param { source: "list.txt" batch_size: 2 }',
    'name: "h5" type: "HDF5Output" hdf5_output_param { file_name: "out.h5" }',
])
def test_missing_h5py_names_the_extra(monkeypatch, text):
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` raise ImportError
    ntop, bottoms = (2, []) if "HDF5Data" in text else (0, [(2, 3), (2,)])
    with pytest.raises(NetConfigError, match=r"layer 'h5' \(HDF5\w+\): .*needs h5py.*pip install 'pycaffe-lite\[hdf5\]'"):
        setup_layer(text, bottoms, num_top=ntop)


@pytest.fixture
def h5files(tmp_path):
    h5py = pytest.importorskip("h5py", reason=H5PY_REASON)
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(3, 2, 2)).astype(np.float32), rng.normal(size=(2, 2, 2)).astype(np.float32)]
    labels = [np.array([0, 1, 2], np.float64), np.array([3, 4], np.float64)]
    names = []
    for i, (d, lab) in enumerate(zip(data, labels)):
        path = tmp_path / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = d
            f["label"] = lab
        names.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n\n")
    return tmp_path, np.concatenate(data), np.concatenate(labels)


def data_text(folder, extra=""):
    return f'name: "h5" type: "HDF5Data" top: "data" top: "label" ' \
           f'hdf5_data_param {{ source: "{folder / "list.txt"}" batch_size: 2 {extra} }}'


def make_data_layer(folder, extra=""):
    from pycaffe_lite.blob import Blob

    from .layer_test_template import layer_param

    layer = HDF5DataLayer(layer_param(data_text(folder, extra)))
    top = [Blob(name="data"), Blob(name="label")]
    layer.set_up([], top)
    return layer, top


def test_rows_in_order_across_files(h5files):
    folder, data, labels = h5files
    layer, top = make_data_layer(folder)
    assert top[0].shape == (2, 2, 2) and top[1].shape == (2,)
    for k in range(4):  # 8 rows over 5: wraps across both files
        forward(layer, [], top)
        rows = [(2 * k) % 5, (2 * k + 1) % 5]
        np.testing.assert_array_equal(top[0].data, data[rows])
        np.testing.assert_array_equal(top[1].data, labels[rows])


def test_shuffle_keeps_rows_whole(h5files):
    folder, data, _ = h5files
    set_random_seed(0)
    layer, top = make_data_layer(folder, "shuffle: true")
    seen = []
    for _ in range(5):
        forward(layer, [], top)
        for d, lab in zip(top[0].data, top[1].data):
            np.testing.assert_array_equal(d, data[int(lab)])  # label i belongs to row i
            seen.append(int(lab))
    assert sorted(seen) == sorted(list(range(5)) * 2)


def test_data_errors(h5files, tmp_path):
    folder, _, _ = h5files
    from pycaffe_lite.blob import Blob

    from .layer_test_template import layer_param

    lp = layer_param(data_text(folder).replace('top: "label"', 'top: "labels"'))
    with pytest.raises(DataError, match=r"'h5' \(HDF5Data\): .*part0.h5' has no dataset 'labels'.*data, label"):
        HDF5DataLayer(lp).set_up([], [Blob(), Blob()])
    (tmp_path / "empty.txt").write_text("\n")
    lp = layer_param(f'name: "h5" type: "HDF5Data" top: "data" hdf5_data_param {{ source: "{tmp_path / "empty.txt"}" '
                     'batch_size: 2 }')
    with pytest.raises(DataError, match="lists no HDF5 files"):
        HDF5DataLayer(lp).set_up([], [Blob()])
    with pytest.raises(NetConfigError, match="batch_size must be a positive"):
        setup_layer('type: "HDF5Data" hdf5_data_param { source: "x" }', [], num_top=1)


def test_output_appends_batches(tmp_path):
    h5py = pytest.importorskip("h5py", reason=H5PY_REASON)
    path = tmp_path / "sub" / "out.h5"
    text = f'name: "out" type: "HDF5Output" hdf5_output_param {{ file_name: "{path}" }}'
    a, b = np.ones((2, 3), np.float32), np.array([1, 2], np.float32)
    layer, bottom, top = setup_layer(text, [a, b], num_top=0)
    forward(layer, bottom, top)
    forward(layer, [blob_from(a * 2), blob_from(b * 2)], top)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data"][()], np.concatenate([a, a * 2]))
        np.testing.assert_array_equal(f["label"][()], np.concatenate([b, b * 2]))
    with pytest.raises(NetConfigError, match="same number of rows"):
        setup_layer(text, [(2, 3), (3,)], num_top=0)
    with pytest.raises(NetConfigError, match="file_name is empty"):
        setup_layer('type: "HDF5Output"', [(2, 3), (2,)], num_top=0)

"""Data layer: shapes, values, order across passes, resume, errors."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.blob import Blob
from pycaffe_lite.data.mnist import bundled_mnist_dir, convert_mnist, read_idx_images, read_idx_labels
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layer import TEST, TRAIN, Layer
from pycaffe_lite.layers.data import DataLayer
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.rng import set_random_seed

GRADIENT_CHECKED: set[str] = set()  # a data layer has no gradient

N = 300
SCALE = np.float32(0.00390625)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    d = bundled_mnist_dir()
    path = str(tmp_path_factory.mktemp("data") / "mnist_train_lmdb")
    convert_mnist(d / "train-images-idx3-ubyte.gz", d / "train-labels-idx1-ubyte.gz", path, limit=N)
    images = read_idx_images(d / "train-images-idx3-ubyte.gz")[:N]
    labels = read_idx_labels(d / "train-labels-idx1-ubyte.gz")[:N]
    return path, images, labels


def make(source: str, extra: str = "", batch_size: int = 64, phase: int = TRAIN, ntop: int = 2,
         transform: str = "scale: 0.00390625", backend: str = "backend: LMDB"):
    from pycaffe_lite.proto import caffe_pb2

    lp = text_format.Parse(
        f'name: "mnist" type: "Data" phase: {"TRAIN" if phase == TRAIN else "TEST"} '
        f"transform_param {{ {transform} }} "
        f'data_param {{ source: "{source}" batch_size: {batch_size} {backend} {extra} }}',
        caffe_pb2.LayerParameter(),
    )
    layer = LAYERS.get("Data")(lp, "net.prototxt:3: ")
    top = [Blob(name="data"), Blob(name="label")][:ntop]
    layer.set_up([], top)
    return layer, top


def test_registered_and_no_backward():
    assert LAYERS.get("Data") is DataLayer and LAYERS.get("DATA") is DataLayer
    assert DataLayer.backward is Layer.backward


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_shapes_and_values(mnist, phase):
    path, images, labels = mnist
    layer, top = make(path, phase=phase)
    assert top[0].shape == (64, 1, 28, 28) and top[1].shape == (64,)
    assert layer.run_forward([], top) == 0.0
    np.testing.assert_array_equal(top[0].data[:, 0], images[:64].astype(np.float32) * SCALE)
    np.testing.assert_array_equal(top[1].data, labels[:64])


def test_single_top(mnist):
    path, images, _ = mnist
    layer, top = make(path, ntop=1, batch_size=5)
    layer.run_forward([], top)
    assert top[0].shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(top[0].data[:, 0], images[:5] * SCALE)


def test_order_wraps_across_passes(mnist):
    path, images, labels = mnist
    layer, top = make(path)
    for n in range(7):  # 7 * 64 > 2 * 300: wraps twice, once inside a batch
        layer.run_forward([], top)
        idx = (64 * n + np.arange(64)) % N
        np.testing.assert_array_equal(top[1].data, labels[idx])
        np.testing.assert_array_equal(top[0].data[:, 0], images[idx] * SCALE)


def test_resume_position(mnist):
    path, _, _ = mnist
    a, top_a = make(path)
    for _ in range(5):
        a.run_forward([], top_a)
    pos = a.get_position()
    assert pos == 5 * 64 % N
    expected = []
    for _ in range(3):
        a.run_forward([], top_a)
        expected.append(top_a[0].data.copy())
    b, top_b = make(path)
    b.set_position(pos)
    for e in expected:
        b.run_forward([], top_b)
        np.testing.assert_array_equal(top_b[0].data, e)


def test_crop_and_mirror_shapes(mnist):
    path, images, _ = mnist
    layer, top = make(path, phase=TEST, transform="crop_size: 24")
    assert top[0].shape == (64, 1, 24, 24)
    layer.run_forward([], top)
    np.testing.assert_array_equal(top[0].data[:, 0], images[:64, 2:26, 2:26])
    set_random_seed(0)
    layer, top = make(path, phase=TRAIN, transform="crop_size: 20 mirror: true")
    layer.run_forward([], top)
    assert top[0].shape == (64, 1, 20, 20)


def test_rand_skip(mnist):
    path, _, labels = mnist
    set_random_seed(1)
    layer, top = make(path, extra="rand_skip: 100")
    start = layer.get_position()
    assert 0 <= start < 100
    layer.run_forward([], top)
    np.testing.assert_array_equal(top[1].data, labels[(start + np.arange(64)) % N])


def test_legacy_data_param_scale(mnist):
    path, images, _ = mnist
    layer, top = make(path, extra="scale: 0.5", transform="", batch_size=3)
    layer.run_forward([], top)
    np.testing.assert_array_equal(top[0].data[:, 0], images[:3] * np.float32(0.5))


def test_missing_lmdb_message(tmp_path):
    missing = str(tmp_path / "mnist_train_lmdb")
    with pytest.raises(DataError) as e:
        make(missing)
    msg = str(e.value)
    assert msg.startswith("net.prototxt:3: layer 'mnist' (Data)")
    assert missing in msg and "plite data mnist" in msg


def test_config_errors(mnist, tmp_path):
    path, _, _ = mnist
    with pytest.raises(NetConfigError, match="LevelDB is not supported.*LMDB"):
        make(path, backend="backend: LEVELDB")
    leveldb = tmp_path / "ldb"
    leveldb.mkdir()
    (leveldb / "CURRENT").write_text("MANIFEST-000001\n")
    from pycaffe_lite.proto import caffe_pb2

    with pytest.raises(NetConfigError, match="LevelDB is not supported"):
        lp = text_format.Parse(f'name: "d" type: "Data" data_param {{ source: "{leveldb}" batch_size: 2 }}',
                               caffe_pb2.LayerParameter())
        DataLayer(lp).set_up([], [Blob()])
    with pytest.raises(NetConfigError, match="batch_size must be a positive"):
        make(path, batch_size=0)
    layer, _ = make(path)
    with pytest.raises(NetConfigError, match="at most 2 top"):
        layer.set_up([], [Blob(), Blob(), Blob()])
    with pytest.raises(NetConfigError, match="exactly 0 bottom"):
        layer.set_up([Blob()], [Blob()])


@pytest.fixture
def streamed(monkeypatch):
    """Databases are streamed (not held in memory), so the Data layer prefetches on a thread."""
    from pycaffe_lite.data import lmdb_source

    monkeypatch.setattr(lmdb_source, "CACHE_LIMIT_BYTES", 0)


def test_prefetch_gives_the_same_batches_and_positions(mnist, streamed):
    import threading

    path, images, labels = mnist
    before = threading.active_count()
    layer, top = make(path, batch_size=70)
    assert not layer.db.cached and layer._executor is not None
    for n in range(6):  # 6 * 70 > 300: wraps, once inside a batch
        assert layer.get_position() == 70 * n % N
        layer.run_forward([], top)
        idx = (70 * n + np.arange(70)) % N
        np.testing.assert_array_equal(top[1].data, labels[idx])
        np.testing.assert_array_equal(top[0].data[:, 0], images[idx] * SCALE)
    # resume mid-way: the batch read ahead is dropped and reading restarts at the position
    layer.set_position(250)
    layer.run_forward([], top)
    np.testing.assert_array_equal(top[1].data, labels[(250 + np.arange(70)) % N])
    assert layer.get_position() == 20
    layer.close()
    assert threading.active_count() == before  # the prefetch thread is gone
    layer.close()  # twice is harmless


def test_prefetch_error_is_raised_by_forward_naming_the_layer(tmp_path, streamed):
    import lmdb

    from pycaffe_lite.data.datum import array_to_datum

    good = array_to_datum(np.zeros((1, 2, 2), np.uint8), 0).SerializeToString()
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k in range(3):
            txn.put(b"%08d" % k, good)
        txn.put(b"00000003", b"\xff\xff\xff\xff")
    env.close()
    layer, top = make(str(tmp_path / "db"), batch_size=2, transform="")
    layer.run_forward([], top)  # records 0, 1
    with pytest.raises(DataError) as e:
        layer.run_forward([], top)  # records 2, 3: the thread met the bad one
    msg = str(e.value)
    assert msg.startswith("net.prototxt:3: layer 'mnist' (Data)") and "'00000003'" in msg
    assert "not a caffe.Datum" in msg
    layer.close()

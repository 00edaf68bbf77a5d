"""BVLC Caffe's example nets with data layers build and train here when their data exist.

A temporary folder is laid out like Caffe's source tree (``examples/...`` copied from
../shared/caffe-examples, ``data/ilsvrc12/...``) and tiny datasets are made where the examples
look for them: CIFAR-10 LMDBs and mean, the siamese MNIST pair LMDBs (``plite data mnist
--siamese``), HDF5 files, a few images for ImageData.  Then the examples' own solvers (or, where
Caffe's notebook writes the solver, a small one) take a few steps.  The example files are used
unchanged but for two cases:

* the siamese example names LevelDB folders, which pycaffe_lite does not read: its two
  ``source`` lines are pointed at the pair LMDBs (that is the one change the net needs);
* four CIFAR-10 solvers ask for ``snapshot_format: HDF5``, which the solver refuses up front
  (tested); without that line they train.

The Pascal fine-tuning example (WindowData) gets its clear not-supported error.  MNIST's own
examples train in test_caffe_examples.py; the examples' deploy nets run forward at the end.
"""
from __future__ import annotations

import math
import os
import shutil
import sys

import numpy as np
import pytest

from pycaffe_lite import TEST, TRAIN
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.net import Net
from pycaffe_lite.rng import set_random_seed
from pycaffe_lite.solvers import get_solver
from tests.conftest import shared_dir


@pytest.fixture(scope="module")
def caffe_root(tmp_path_factory):
    """A folder laid out like Caffe's tree: examples/ (the shared example files) and data/."""
    root = tmp_path_factory.mktemp("caffe_root")
    shutil.copytree(shared_dir("caffe-examples"), root / "examples")
    return root


def finite_steps(solver, iters: int) -> list[float]:
    losses = []
    for _ in range(iters):
        solver.step(1)
        losses.append(float(solver.smoothed_loss))
    assert solver.iter == iters and all(math.isfinite(v) for v in losses), losses
    return losses


# --- CIFAR-10 ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_root(caffe_root):
    from pycaffe_lite.data.mean import compute_mean, save_mean
    from pycaffe_lite.data.mnist import write_datum_lmdb

    folder = caffe_root / "examples" / "cifar10"
    rs = np.random.default_rng(0)
    for name, n in (("cifar10_train_lmdb", 24), ("cifar10_test_lmdb", 12)):
        images = rs.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        write_datum_lmdb(folder / name, images, np.arange(n) % 10)
    # what Caffe's examples/cifar10/create_cifar10.sh computes with compute_image_mean
    save_mean(compute_mean(str(folder / "cifar10_train_lmdb")), folder / "mean.binaryproto")
    return caffe_root


CIFAR_SOLVERS = {  # solver -> its net
    "cifar10_quick_solver.prototxt": "cifar10_quick_train_test.prototxt",
    "cifar10_full_solver.prototxt": "cifar10_full_train_test.prototxt",
    "cifar10_full_sigmoid_solver.prototxt": "cifar10_full_sigmoid_train_test.prototxt",
    "cifar10_full_sigmoid_solver_bn.prototxt": "cifar10_full_sigmoid_train_test_bn.prototxt",
}
# These ask for HDF5 snapshots, which pycaffe_lite does not write: they are refused up front.
HDF5_SNAPSHOT_SOLVERS = ["cifar10_full_solver.prototxt", "cifar10_full_solver_lr1.prototxt",
                         "cifar10_full_solver_lr2.prototxt", "cifar10_quick_solver_lr1.prototxt"]


def binaryproto_snapshots(folder, name: str) -> str:
    """The solver without its ``snapshot_format: HDF5`` line, saved beside it; returns its path."""
    text = (folder / name).read_text()
    assert text.count("snapshot_format: HDF5\n") == 1
    out = folder / name.replace(".prototxt", "_binaryproto.prototxt")
    out.write_text(text.replace("snapshot_format: HDF5\n", ""))
    return str(out.relative_to(folder.parent.parent))


@pytest.mark.parametrize("solver_file", list(CIFAR_SOLVERS))
def test_cifar10_example_trains_a_few_steps(cifar_root, solver_file, monkeypatch):
    monkeypatch.chdir(cifar_root)
    set_random_seed(0)
    path = f"examples/cifar10/{solver_file}"
    if solver_file in HDF5_SNAPSHOT_SOLVERS:
        path = binaryproto_snapshots(cifar_root / "examples" / "cifar10", solver_file)
    solver = get_solver(path)
    assert solver.param.net.endswith(CIFAR_SOLVERS[solver_file])
    solver.param.test_initialization = False  # the examples test on 10,000 images
    net = solver.net
    assert net.blobs["data"].shape[1:] == (3, 32, 32) and net.blobs["label"].shape == net.blobs["data"].shape[:1]
    finite_steps(solver, 2)
    # the data layer subtracted the mean file: a batch has about zero mean (raw pixels: about 127)
    assert abs(float(net.blobs["data"].data.mean())) < 10
    test_net = solver.test_nets[0]
    assert test_net.blobs["data"].shape[0] in (100, 1000) and "accuracy" in test_net.outputs


@pytest.mark.parametrize("solver_file", HDF5_SNAPSHOT_SOLVERS)
def test_cifar10_solvers_with_hdf5_snapshots_are_refused_clearly(cifar_root, solver_file, monkeypatch):
    from pycaffe_lite.errors import SolverConfigError

    monkeypatch.chdir(cifar_root)
    with pytest.raises(SolverConfigError, match=rf"{solver_file}:2[34]: snapshot_format HDF5 is not supported.*"
                                                r"remove snapshot_format"):
        get_solver(f"examples/cifar10/{solver_file}")
    solver = get_solver(binaryproto_snapshots(cifar_root / "examples" / "cifar10", solver_file))
    assert solver.net.outputs == ["loss"] and len(solver.test_nets) == 1


def test_cifar10_quick_tests_like_caffe(cifar_root, monkeypatch):
    monkeypatch.chdir(cifar_root)
    solver = get_solver("examples/cifar10/cifar10_quick_solver.prototxt")
    solver.param.test_iter[0] = 1
    scores = solver.test()
    assert set(scores) == {"accuracy", "loss"} and 0 <= scores["accuracy"] <= 1 and math.isfinite(scores["loss"])


# --- MNIST solvers that test_caffe_examples.py does not train ------------------------------------
@pytest.fixture(scope="module")
def mnist_root(caffe_root):
    from pycaffe_lite.data.mnist import prepare_mnist

    prepare_mnist(caffe_root / "examples" / "mnist", limit=100)
    return caffe_root


def test_mnist_consolidated_solver_builds_its_two_test_nets_by_stage(mnist_root, monkeypatch):
    monkeypatch.chdir(mnist_root)
    solver = get_solver("examples/mnist/lenet_consolidated_solver.prototxt")
    assert list(solver.param.test_iter) == [100, 600] and len(solver.test_nets) == 2
    # test-on-test-set reads the test LMDB, test-on-train-set the training one
    sources = [[lp.data_param.source for lp in net.param.layer if lp.type == "Data"] for net in solver.test_nets]
    assert sources == [["examples/mnist/mnist_test_lmdb"], ["examples/mnist/mnist_train_lmdb"]]
    solver.param.test_initialization = False
    finite_steps(solver, 1)


@pytest.mark.parametrize("name", ["mnist_autoencoder_solver.prototxt", "mnist_autoencoder_solver_adadelta.prototxt"])
def test_mnist_autoencoder_solvers_step(mnist_root, name, monkeypatch):
    monkeypatch.chdir(mnist_root)
    solver = get_solver(f"examples/mnist/{name}")
    solver.param.test_initialization = False
    finite_steps(solver, 1)


# --- siamese ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def siamese_root(caffe_root):
    """`plite data mnist --siamese` run from the tree's root, as create_mnist_siamese.sh is."""
    from pycaffe_lite.cli import main

    here = os.getcwd()
    os.chdir(caffe_root)
    try:
        assert main(["--quiet", "data", "mnist", "--siamese", "--out-dir", "examples/siamese", "--limit", "300"]) == 0
    finally:
        os.chdir(here)
    return caffe_root


def test_siamese_pairs_follow_caffes_converter(siamese_root):
    """N records keyed %08d, each a 2 x 28 x 28 pair of digits, label 1 iff the digits agree."""
    import lmdb

    from pycaffe_lite.data.mnist import bundled_mnist_dir, read_idx_images, read_idx_labels
    from pycaffe_lite.proto import caffe_pb2

    images = read_idx_images(bundled_mnist_dir() / "train-images-idx3-ubyte.gz")[:300]
    labels = read_idx_labels(bundled_mnist_dir() / "train-labels-idx1-ubyte.gz")[:300]
    digit_of = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}
    env = lmdb.open(str(siamese_root / "examples" / "siamese" / "mnist_siamese_train_lmdb"), readonly=True,
                    lock=False)
    with env.begin() as txn:
        keys, similar = [], []
        for key, value in txn.cursor():
            datum = caffe_pb2.Datum.FromString(value)
            assert (datum.channels, datum.height, datum.width) == (2, 28, 28)
            pair = np.frombuffer(datum.data, np.uint8).reshape(2, 28 * 28)
            first, second = (digit_of[p.reshape(28, 28).tobytes()] for p in pair)
            assert datum.label == int(first == second)
            keys.append(key)
            similar.append(datum.label)
    env.close()
    assert keys == [b"%08d" % i for i in range(300)]
    # random digits agree about one time in ten
    assert 0.03 < np.mean(similar) < 0.25


def test_siamese_example_trains_with_its_sources_pointed_at_the_lmdbs(siamese_root, monkeypatch):
    monkeypatch.chdir(siamese_root)
    net_file = siamese_root / "examples" / "siamese" / "mnist_siamese_train_test.prototxt"
    original = net_file.read_text()
    # unchanged, the example looks for LevelDB folders that do not exist here
    with pytest.raises(DataError, match="mnist_siamese_train_leveldb"):
        Net(str(net_file), phase=TRAIN)
    # the one change: source lines name the LMDBs (backend is unset in the file, so no backend line)
    changed = original.replace("_train_leveldb", "_train_lmdb").replace("_test_leveldb", "_test_lmdb")
    assert "backend" not in original and changed.count("_lmdb") == 2
    net_file.write_text(changed)
    set_random_seed(0)
    solver = get_solver("examples/siamese/mnist_siamese_solver.prototxt")
    solver.param.test_initialization = False
    net = solver.net
    assert net.blobs["pair_data"].shape == (64, 2, 28, 28) and net.blobs["sim"].shape == (64,)
    assert net.blobs["data"].shape == net.blobs["data_p"].shape == (64, 1, 28, 28)
    assert net.blobs["feat"].shape == net.blobs["feat_p"].shape == (64, 2)
    # the two towers share every parameter by name
    for layer in ("conv1", "conv2", "ip1", "ip2", "feat"):
        for a, b in zip(net.params[layer], net.params[layer + "_p"]):
            assert np.shares_memory(a.data, b.data), layer
    finite_steps(solver, 3)
    assert solver.test_nets[0].blobs["pair_data"].shape == (100, 2, 28, 28)


def test_siamese_pair_errors(tmp_path):
    from pycaffe_lite.data.mnist import make_siamese_pairs, prepare_mnist_siamese

    with pytest.raises(DataError, match="no images to pair"):
        make_siamese_pairs(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DataError, match="MNIST folder '.*nowhere' does not exist"):
        prepare_mnist_siamese(tmp_path, idx_dir=tmp_path / "nowhere")
    (tmp_path / "mnist_siamese_train_lmdb").mkdir()
    with pytest.raises(DataError, match="mnist_siamese_train_lmdb' already exists; delete it or pass overwrite"):
        prepare_mnist_siamese(tmp_path, limit=5)


def test_siamese_pairs_are_repeatable_by_seed():
    from pycaffe_lite.data.mnist import make_siamese_pairs

    rs = np.random.default_rng(3)
    images = rs.integers(0, 256, size=(50, 4, 4), dtype=np.uint8)
    labels = rs.integers(0, 10, size=50).astype(np.uint8)
    a, sa = make_siamese_pairs(images, labels, seed=7)
    b, sb = make_siamese_pairs(images, labels, seed=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)
    assert a.shape == (50, 2, 4, 4) and sa.dtype == np.uint8


# --- HDF5 classification ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hdf5_root(caffe_root):
    """What Caffe's hdf5_classification notebook writes: data/{train,test}.h5 and the lists naming them."""
    h5py = pytest.importorskip("h5py", reason="HDF5Data needs the optional h5py (pip install '.[hdf5]')")
    folder = caffe_root / "examples" / "hdf5_classification" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.default_rng(0)
    for name, n in (("train", 200), ("test", 50)):
        x = rs.normal(size=(n, 4)).astype(np.float32)
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.float32)  # linearly separable
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f["data"], f["label"] = x, y
        (folder / f"{name}.txt").write_text(f"examples/hdf5_classification/data/{name}.h5\n")
    return caffe_root


HDF5_SOLVER = ('{nets} test_iter: 5 test_interval: 1000 base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 '
               'lr_policy: "fixed" max_iter: 100 display: 0 snapshot: 0 random_seed: 1 test_initialization: false')
HDF5_NETS = {
    "train_val": 'net: "examples/hdf5_classification/train_val.prototxt"',
    "nonlinear_train_val": 'net: "examples/hdf5_classification/nonlinear_train_val.prototxt"',
    "nonlinear_auto": 'train_net: "examples/hdf5_classification/nonlinear_auto_train.prototxt" '
                      'test_net: "examples/hdf5_classification/nonlinear_auto_test.prototxt"',
}


@pytest.mark.parametrize("which", list(HDF5_NETS))
def test_hdf5_classification_example_trains(hdf5_root, which, monkeypatch):
    monkeypatch.chdir(hdf5_root)
    solver = get_solver(HDF5_SOLVER.format(nets=HDF5_NETS[which]))
    assert solver.net.blobs["data"].shape == (10, 4) and solver.net.blobs["label"].shape == (10,)
    losses = finite_steps(solver, 60)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    scores = solver.test()
    assert 0 <= scores["accuracy"] <= 1 and math.isfinite(scores["loss"])


# --- feature extraction: ImageData --------------------------------------------------------------
COLORS = [(200, 30, 10), (0, 120, 255), (60, 60, 60), (255, 255, 0)]  # RGB


@pytest.fixture(scope="module")
def imagenet_val_root(caffe_root):
    from PIL import Image

    from pycaffe_lite.data.mean import save_mean
    from pycaffe_lite.proto import caffe_pb2

    images = caffe_root / "examples" / "images"
    images.mkdir(exist_ok=True)
    lines = []
    for k, color in enumerate(COLORS):  # tiny solid images of various sizes; ImageData resizes to 256 x 256
        Image.new("RGB", (20 + 3 * k, 17 + k), color).save(images / f"img{k}.png")
        lines.append(f"examples/images/img{k}.png 0")
    (caffe_root / "examples" / "_temp").mkdir(exist_ok=True)
    (caffe_root / "examples" / "_temp" / "file_list.txt").write_text("\n".join(lines) + "\n")
    mean = caffe_pb2.BlobProto()
    mean.num, mean.channels, mean.height, mean.width = 1, 3, 256, 256
    values = np.random.default_rng(0).uniform(90, 130, size=(3, 256, 256)).astype(np.float32)
    mean.data.extend(values.ravel().tolist())
    (caffe_root / "data" / "ilsvrc12").mkdir(parents=True)
    save_mean(mean, caffe_root / "data" / "ilsvrc12" / "imagenet_mean.binaryproto")
    return caffe_root, values


def test_imagenet_val_builds_and_reads_its_images(imagenet_val_root, monkeypatch):
    root, mean = imagenet_val_root
    monkeypatch.chdir(root)
    net = Net("examples/feature_extraction/imagenet_val.prototxt", phase=TEST)
    assert net.blobs["data"].shape == (50, 3, 227, 227) and net.blobs["label"].shape == (50,)
    assert net.blobs["fc7"].shape == (50, 4096) and net.blobs["prob"].shape == (50, 1000)
    assert net.outputs == ["accuracy", "loss"]
    net.forward(end="data")
    data = net.blobs["data"].data
    # 50 images from a list of 4 (wrapping), BGR as OpenCV reads them, minus the mean's centre crop
    crop = mean[:, 14:241, 14:241]
    for k in (0, 1, 2, 3, 4, 49):
        bgr = np.array(COLORS[k % 4][::-1], np.float32)[:, None, None]
        np.testing.assert_allclose(data[k], bgr - crop, atol=1e-4)


# --- Pascal fine-tuning: WindowData ------------------------------------------------------------
def test_pascal_finetune_says_window_data_is_not_supported(caffe_root, monkeypatch):
    monkeypatch.chdir(caffe_root)
    for build in (lambda: Net("examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt",
                              phase=TRAIN),
                  lambda: get_solver("examples/finetune_pascal_detection/pascal_finetune_solver.prototxt")):
        with pytest.raises(NetConfigError) as e:
            build()
        msg = str(e.value)
        assert "layer 'data'" in msg and "WindowData (R-CNN's window-file reader) is not supported" in msg
        assert "ImageData" in msg  # and what to use instead


# --- Python layer: pycaffe's linear regression --------------------------------------------------
PYLOSS = '''
import numpy as np


class EuclideanLossLayer:
    """Half the mean squared distance of two bottoms, as the pycaffe example's loss layer computes."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("two bottoms needed")

    def reshape(self, bottom, top):
        self.diff = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i, sign in enumerate((1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * self.diff / bottom[i].num
'''


def test_pycaffe_linreg_example_with_a_python_loss(caffe_root, monkeypatch):
    folder = caffe_root / "examples" / "pycaffe"
    (folder / "pyloss.py").write_text(PYLOSS)
    monkeypatch.chdir(caffe_root)
    monkeypatch.delitem(sys.modules, "pyloss", raising=False)
    try:
        solver = get_solver('net: "examples/pycaffe/linreg.prototxt" base_lr: 0.01 lr_policy: "fixed" '
                            'max_iter: 10 display: 0 snapshot: 0 random_seed: 1')
        assert solver.net.blobs["ipx"].shape == (10, 10) and solver.net.blobs["loss"].shape == (1,)
        finite_steps(solver, 3)
        assert np.any(solver.net.params["ipx"][0].diff != 0)
    finally:
        sys.modules.pop("pyloss", None)


# --- the examples' deploy nets -------------------------------------------------------------------
DEPLOY = {  # file -> {blob: shape at the file's batch}
    "mnist/lenet.prototxt": {"data": (64, 1, 28, 28), "pool2": (64, 50, 4, 4), "prob": (64, 10)},
    "siamese/mnist_siamese.prototxt": {"data": (10000, 1, 28, 28), "ip1": (10000, 500), "feat": (10000, 2)},
    "net_surgery/conv.prototxt": {"data": (1, 1, 100, 100), "conv": (1, 3, 96, 96)},
    # fc6-fc8 as convolutions: a 451 x 451 input gives an 8 x 8 map of class scores
    "net_surgery/bvlc_caffenet_full_conv.prototxt": {"pool5": (1, 256, 13, 13), "fc6-conv": (1, 4096, 8, 8),
                                                     "prob": (1, 1000, 8, 8)},
}
SMALLER = {  # forward at a smaller input to keep the test fast
    "siamese/mnist_siamese.prototxt": ((2, 1, 28, 28), {"feat": (2, 2)}),
    "net_surgery/bvlc_caffenet_full_conv.prototxt": ((1, 3, 259, 259), {"prob": (1, 1000, 2, 2)}),
}


@pytest.mark.parametrize("name", list(DEPLOY))
def test_example_deploy_net_builds_and_runs_forward(name):
    net = Net(str(shared_dir("caffe-examples") / name), phase=TEST)
    for blob, shape in DEPLOY[name].items():
        assert net.blobs[blob].shape == shape, blob
    rs = np.random.default_rng(0)
    for blobs in net.params.values():  # the files have no fillers: random weights (float32 draws are quick)
        for b in blobs:
            b.data[...] = rs.standard_normal(b.shape, dtype=np.float32) * np.float32(0.02)
    data = net.blobs["data"]
    shape, out_shapes = SMALLER.get(name, (data.shape, {}))
    data.reshape(*shape)
    net.reshape()
    data.data[...] = rs.uniform(0, 1, size=data.shape)
    out = net.forward()
    for blob, array in out.items():
        assert array.shape[0] == data.shape[0] and np.isfinite(array).all(), blob
    for blob, shape in out_shapes.items():
        assert out[blob].shape == shape, blob
    if "prob" in out:
        np.testing.assert_allclose(out["prob"].sum(axis=1), 1.0, rtol=1e-5)

"""models/lenet_finetune: a short LeNet trained on ten digits, fine-tuned on 4 versus 9 with the
model's own prototxt and solver (only paths, batch and length shortened): conv layers stay
frozen, ip1 is copied by name and trained on, ip2_binary starts afresh, and it learns."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from pycaffe_lite.errors import DataError
from pycaffe_lite.io.caffemodel import read_message
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.report import ReportCollector
from pycaffe_lite.solvers import get_solver
from pycaffe_lite.solvers.solver import load_solver_param
from tests.conftest import ROOT

FINETUNE = ROOT / "models" / "lenet_finetune"


def load_tool():
    spec = importlib.util.spec_from_file_location("subset_lmdb", ROOT / "tools" / "subset_lmdb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_net(src, dst, sources: dict, batch: int = 32):
    text = src.read_text()
    for old, new in sources.items():
        assert old in text
        text = text.replace(f'"{old}"', f'"{new}"')
    dst.write_text(text.replace("batch_size: 64", f"batch_size: {batch}").replace("batch_size: 100", "batch_size: 50"))
    return dst


def blobs_of(path) -> dict:
    p = read_message(str(path), caffe_pb2.NetParameter(), "caffemodel")
    return {layer.name: [np.asarray(b.data, np.float32) for b in layer.blobs] for layer in p.layer if layer.blobs}


def test_subset_tool_relabels_and_refuses_bad_classes(tmp_path, mnist_small):
    tool = load_tool()
    counts = tool.subset_lmdb(mnist_small / "mnist_test_lmdb", tmp_path / "sub", [9, 4], limit=20)
    assert sum(counts.values()) == 20 and set(counts) == {9, 4}
    net = Net(f'layer {{ name: "d" type: "Data" top: "x" top: "y" data_param {{ source: "{tmp_path / "sub"}" '
              'batch_size: 20 backend: LMDB } }', phase=TEST)
    net.forward()
    labels = net.blobs["y"].data
    assert sorted(np.unique(labels)) == [0, 1] and (labels == 0).sum() == counts[9]  # 9 -> 0, 4 -> 1
    with pytest.raises(DataError, match="must list distinct labels"):
        tool.subset_lmdb(mnist_small / "mnist_test_lmdb", tmp_path / "x", [4, 4])
    with pytest.raises(DataError, match=r"no record has a label in \[42\]"):
        tool.subset_lmdb(mnist_small / "mnist_test_lmdb", tmp_path / "x", [42])
    assert tool.main([str(mnist_small / "mnist_test_lmdb"), str(tmp_path / "x"), "--classes", "4,x"]) == 1


@pytest.mark.slow
def test_finetune_freezes_convs_copies_ip1_and_learns(tmp_path, mnist_small):
    tool = load_tool()
    for split in ("train", "test"):
        tool.subset_lmdb(mnist_small / f"mnist_{split}_lmdb", tmp_path / f"{split}_4v9", [4, 9])
    # 1. a short LeNet on all ten digits (models/lenet's net and solver, shortened)
    lenet = copy_net(ROOT / "models" / "lenet" / "lenet_train_test.prototxt", tmp_path / "lenet.prototxt",
                     {"data/mnist/mnist_train_lmdb": mnist_small / "mnist_train_lmdb",
                      "data/mnist/mnist_test_lmdb": mnist_small / "mnist_test_lmdb"})
    p, _ = load_solver_param(str(ROOT / "models" / "lenet" / "lenet_solver.prototxt"))
    p.net, p.max_iter, p.test_interval, p.snapshot, p.display = str(lenet), 30, 0, 0, 0
    p.snapshot_prefix = str(tmp_path / "lenet")
    get_solver(p).solve()
    pretrained = blobs_of(tmp_path / "lenet_iter_30.caffemodel")
    # 2. fine-tune with the model's own solver (weights from step 1)
    net = copy_net(FINETUNE / "lenet_finetune_train_test.prototxt", tmp_path / "ft.prototxt",
                   {"data/mnist/mnist_train_4v9_lmdb": tmp_path / "train_4v9",
                    "data/mnist/mnist_test_4v9_lmdb": tmp_path / "test_4v9"})
    p, _ = load_solver_param(str(FINETUNE / "lenet_finetune_solver.prototxt"))
    assert list(p.weights) == ["models/lenet/lenet_iter_2000.caffemodel"] and p.lr_policy == "plateau"
    p.net, p.max_iter, p.test_interval, p.display = str(net), 20, 10, 0
    p.weights[:] = [str(tmp_path / "lenet_iter_30.caffemodel")]
    p.snapshot_prefix = str(tmp_path / "ft")
    solver = get_solver(p)
    tuned = solver.net.params
    assert tuned["ip2_binary"][0].shape == (2, 500) and "ip2" not in tuned
    np.testing.assert_array_equal(tuned["ip1"][0].data.ravel(), pretrained["ip1"][0])  # copied by name
    solver.solve()
    after = blobs_of(tmp_path / "ft_best.caffemodel")
    for name in ("conv1", "conv2"):  # lr_mult 0: not one weight moved
        for a, b in zip(after[name], pretrained[name]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(after["ip1"][0], pretrained["ip1"][0])  # trained on
    best = solver.monitor.best
    assert best >= 0.85, f"4-versus-9 test accuracy after fine-tuning: {best}"
    # the best weights score as well in a fresh test net (which starts reading at the first record:
    # the small test subset wraps, so its 100 samples are not those of the solver's best test)
    test_net = Net(str(net), phase=TEST, weights=[str(tmp_path / "ft_best.caffemodel")])
    collector = ReportCollector(test_net)
    for _ in range(p.test_iter[0]):
        test_net.forward()
        collector.add()
    report = collector.report()
    assert report.confusion.shape == (2, 2) and report.num_samples == 100 and report.accuracy >= 0.85
    deploy = Net(str(FINETUNE / "lenet_finetune_deploy.prototxt"), phase=TEST,
                 weights=[str(tmp_path / "ft_best.caffemodel")])
    assert deploy.blobs["prob"].shape == (64, 2)

"""The tools a Caffe user reaches for, end to end on small inputs: data imageset / mean, features,
draw, log parse / plot, convert (and YAML wherever a prototxt goes), --lenient, upgrade of a
binary caffemodel, models."""
from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pycaffe_lite.cli import main
from pycaffe_lite.data.mean import load_mean
from pycaffe_lite.proto import caffe_pb2
from tests.conftest import ROOT

LENET = ROOT / "models" / "lenet"


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() / setup_logging configure the pycaffe_lite logger: put it back for other tests."""
    logger = logging.getLogger("pycaffe_lite")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8 + i % 2, 3), dtype=np.uint8), "RGB").save(d / f"{i}.png")
        lines.append(f"{i}.png {i % 3}")
    (d / "list.txt").write_text("\n".join(lines) + "\n")
    return d


NET = """
name: "feat"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { mean_file: "mean.binaryproto" scale: 0.0078125 }
  data_param { source: "db" batch_size: 3 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
"""


def test_imageset_mean_and_features(images, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "imageset", str(images), str(images / "list.txt"), "db", "--resize-height", "6",
                 "--resize-width", "6", "--shuffle"]) == 0
    assert "Wrote 6 images to db" in capsys.readouterr().err
    assert main(["data", "mean", "db", "mean.binaryproto"]) == 0
    assert load_mean("mean.binaryproto").shape == (3, 6, 6)
    (tmp_path / "net.prototxt").write_text(NET)
    import pycaffe_lite as pl

    pl.Net("net.prototxt", phase=pl.TEST).save("w.caffemodel")
    assert main(["features", "--model", "net.prototxt", "--weights", "w.caffemodel", "--blobs", "ip,data",
                 "--iterations", "2", "--out", "feat"]) == 0
    ip, data = np.load("feat/ip.npy"), np.load("feat/data.npy")
    assert ip.shape == (6, 4) and data.shape == (6, 3, 6, 6)
    assert main(["features", "-model", "net.prototxt", "-weights", "w.caffemodel", "-blobs", "ip",
                 "-iterations", "2", "-out", "lm", "-format", "lmdb"]) == 0
    from pycaffe_lite.data.lmdb_source import LMDBSource

    with LMDBSource("lm/ip") as src:
        assert src.count == 6 and src.record_shape == (4, 1, 1)
        values, _ = src.load_all()
    np.testing.assert_array_equal(values.reshape(6, 4), ip)
    capsys.readouterr()
    assert main(["features", "--model", "net.prototxt", "--blobs", "nope", "--out", "x"]) == 1
    assert "no blob named 'nope' in the TEST net; it has: data, label, conv, ip" in capsys.readouterr().err


def test_imageset_errors(images, tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("0.png\n")
    assert main(["data", "imageset", str(images), str(tmp_path / "bad.txt"), str(tmp_path / "db")]) == 1
    assert "bad.txt:1: expected 'relative/path label'" in capsys.readouterr().err


def test_draw(tmp_path, capsys):
    out = tmp_path / "lenet.png"
    assert main(["draw", str(LENET / "lenet_train_test.prototxt"), str(out), "--rankdir", "TB",
                 "--phase", "test"]) == 0
    with Image.open(out) as im:
        assert im.size[1] > im.size[0]
    assert main(["draw", str(LENET / "lenet_deploy.prototxt"), str(tmp_path / "d.dot")]) == 0
    assert "rankdir=LR" in (tmp_path / "d.dot").read_text()


def test_log_parse_and_plot(tmp_path, capsys):
    from tests.test_log_parse import CAFFE_LOG

    log = tmp_path / "train.log"
    log.write_text(CAFFE_LOG)
    assert main(["log", "parse", str(log), str(tmp_path / "csv")]) == 0
    assert (tmp_path / "csv" / "train.log.train.csv").read_text().startswith("NumIters,Seconds,LearningRate,loss")
    assert (tmp_path / "csv" / "train.log.test.csv").exists()
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the optional 'plot' extra)")
    assert main(["log", "plot", str(log), str(tmp_path / "p.png"), "--x", "seconds", "--y", "loss", "lr"]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["log", "plot", str(log), str(tmp_path / "p.png"), "--y", "top1"]) == 1
    assert "no output named 'top1'" in capsys.readouterr().err


def test_convert_and_yaml_wherever_a_prototxt_goes(tmp_path, capsys):
    deploy = tmp_path / "deploy.yaml"
    assert main(["convert", str(LENET / "lenet_deploy.prototxt"), str(deploy)]) == 0
    assert main(["convert", str(deploy), str(tmp_path / "back.prototxt")]) == 0
    from pycaffe_lite.io.prototxt import parse_net

    assert parse_net(tmp_path / "back.prototxt") == parse_net(LENET / "lenet_deploy.prototxt")
    assert main(["time", "--model", str(deploy), "--iterations", "1"]) == 0
    assert main(["draw", str(deploy), str(tmp_path / "d.svg")]) == 0


FORK = """name: "fork"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 6 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: true } }
"""


def test_fork_fields_and_lenient(tmp_path, capsys):
    net = tmp_path / "fork.prototxt"
    net.write_text(FORK)
    assert main(["time", "--model", str(net), "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert f"{net}:4:" in err and "'ceil_mode'" in err and "Caffe fork" in err and "--lenient" in err
    assert main(["time", "--model", str(net), "--iterations", "1", "--lenient"]) == 0
    assert f"{net}:4: skipping unknown field 'ceil_mode'" in capsys.readouterr().err
    assert main(["draw", str(net), str(tmp_path / "f.dot"), "--lenient"]) == 0
    assert main(["time", "--model", str(net), "--iterations", "1"]) == 1  # lenient was only for that run


def _v1_caffemodel(path) -> caffe_pb2.NetParameter:
    from google.protobuf import text_format

    net = text_format.Parse(
        'name: "v1" input: "data" input_dim: 2 input_dim: 1 input_dim: 2 input_dim: 2 '
        'layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" blobs_lr: 1 blobs_lr: 2 '
        "  inner_product_param { num_output: 3 } } "
        'layers { name: "relu" type: RELU bottom: "ip" top: "ip" }', caffe_pb2.NetParameter())
    rng = np.random.default_rng(0)
    w = net.layers[0].blobs.add(num=1, channels=1, height=3, width=4)
    w.data.extend(rng.normal(size=12).astype(np.float32).tolist())
    b = net.layers[0].blobs.add(num=1, channels=1, height=1, width=3)
    b.data.extend([0.5, -1.0, 2.0])
    path.write_bytes(net.SerializeToString())
    return net


def test_upgrade_binary_v1_caffemodel(tmp_path, capsys):
    old = _v1_caffemodel(tmp_path / "old.caffemodel")
    assert main(["upgrade", str(tmp_path / "old.caffemodel"), str(tmp_path / "new.caffemodel")]) == 0
    assert "binary caffemodel" in capsys.readouterr().err
    new = caffe_pb2.NetParameter()
    new.ParseFromString((tmp_path / "new.caffemodel").read_bytes())
    assert not len(new.layers) and [layer.type for layer in new.layer] == ["Input", "InnerProduct", "ReLU"]
    assert list(new.layer[1].blobs[0].data) == list(old.layers[0].blobs[0].data)
    assert [p.lr_mult for p in new.layer[1].param] == [1, 2]
    # a binary file without the extension is recognised too
    (tmp_path / "old.bin").write_bytes((tmp_path / "old.caffemodel").read_bytes())
    assert main(["upgrade", str(tmp_path / "old.bin"), str(tmp_path / "new2.caffemodel")]) == 0
    assert (tmp_path / "new2.caffemodel").read_bytes() == (tmp_path / "new.caffemodel").read_bytes()
    (tmp_path / "junk.caffemodel").write_bytes(b"\xff\xff\xff")
    assert main(["upgrade", str(tmp_path / "junk.caffemodel"), str(tmp_path / "x.caffemodel")]) == 1
    assert "junk.caffemodel: not a valid caffemodel" in capsys.readouterr().err


def test_models_from_the_repo_root():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", "models"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "lenet: LeNet" in r.stdout and "input: 64x1x28x28" in r.stdout
    assert "mnist_autoencoder: MNIST deep autoencoder" in r.stdout


def test_models_errors(tmp_path, capsys):
    assert main(["models", "--dir", str(tmp_path / "none")]) == 1
    assert "no such folder; run from the repository's root or give --dir" in capsys.readouterr().err

"""`plite` end to end: data, train (loss falls, snapshots appear), test, time, upgrade, errors."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def plite(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pycaffe_lite.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    r = plite("data", "mnist", "--limit", "300", cwd=d)
    assert r.returncode == 0, r.stderr
    assert (d / "data" / "mnist" / "mnist_train_lmdb").is_dir()
    net = (ROOT / "models" / "lenet" / "lenet_train_test.prototxt").read_text()
    (d / "net.prototxt").write_text(net)
    (d / "solver.prototxt").write_text(
        'net: "net.prototxt"\ntest_iter: 2\ntest_interval: 20\nbase_lr: 0.01\nmomentum: 0.9\n'
        'weight_decay: 0.0005\nlr_policy: "inv"\ngamma: 0.0001\npower: 0.75\ndisplay: 10\nmax_iter: 40\n'
        'snapshot: 20\nsnapshot_prefix: "snap/lenet"\nrandom_seed: 3\n')
    return d


@pytest.mark.slow
def test_train_test_time(workdir):
    r = plite("train", "--solver", "solver.prototxt", cwd=workdir)
    assert r.returncode == 0, r.stderr
    log = r.stderr
    losses = [float(m) for m in re.findall(r"Iteration \d+ \(.*\), loss = ([\d.e+-]+)", log)]
    assert len(losses) >= 3 and losses[-1] < losses[0], log
    assert re.search(r"Test net output #0: accuracy = [\d.]+", log)
    assert re.search(r"Iteration \d+, lr = [\d.e+-]+", log)
    assert "Optimization Done." in log
    assert (workdir / "snap" / "lenet_iter_40.caffemodel").exists()
    assert (workdir / "snap" / "lenet_iter_20.solverstate").exists()

    r = plite("test", "--model", "net.prototxt", "--weights", "snap/lenet_iter_40.caffemodel",
              "--iterations", "2", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert re.search(r"Batch 1, accuracy = [\d.]+", r.stderr)
    assert re.search(r"loss = [\d.]+ \(\* 1 = [\d.]+ loss\)", r.stderr)

    r = plite("train", "--solver", "solver.prototxt", "--snapshot", "snap/lenet_iter_20.solverstate", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "Resuming from snap/lenet_iter_20.solverstate" in r.stderr or "Restoring" in r.stderr

    r = plite("time", "--model", "net.prototxt", "--iterations", "2", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert re.search(r"conv1\s+forward: [\d.]+ ms", r.stderr)
    assert re.search(r"Average Forward-Backward: [\d.]+ ms", r.stderr)


def test_broken_prototxt_exits_1_with_file_and_line(tmp_path):
    (tmp_path / "bad.prototxt").write_text('name: "x"\nlayer {\n  name: "a"\n  type: "Input"\n  top: "x"\n  oops {\n}\n')
    r = plite("time", "--model", "bad.prototxt", cwd=tmp_path)
    assert r.returncode == 1
    assert re.search(r"bad.prototxt:6", r.stderr), r.stderr
    assert "Traceback" not in r.stderr


def test_missing_lmdb_names_path_and_fix(tmp_path):
    (tmp_path / "net.prototxt").write_text((ROOT / "models" / "lenet" / "lenet_train_test.prototxt").read_text())
    r = plite("time", "--model", "net.prototxt", cwd=tmp_path)
    assert r.returncode == 1
    assert "data/mnist/mnist_train_lmdb" in r.stderr and "plite data mnist" in r.stderr


def test_upgrade_v1_file(tmp_path):
    from tests.conftest import shared_dir

    legacy = shared_dir("legacy") / "lenet_v1.prototxt"
    r = plite("upgrade", str(legacy), "out.prototxt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "out.prototxt").read_text()
    assert 'type: "Convolution"' in text and "lr_mult: 2" in text


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "bad.prototxt").write_text('layer { name: "a" type: "Nope" top: "x" }\n')
    r = plite("--debug", "time", "--model", "bad.prototxt", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "unknown layer type 'Nope'" in r.stderr


@pytest.mark.slow
def test_ctrl_c_snapshots_and_stops(workdir):
    import signal
    import time

    (workdir / "long.prototxt").write_text(
        (workdir / "solver.prototxt").read_text().replace("max_iter: 40", "max_iter: 100000")
        .replace('snapshot_prefix: "snap/lenet"', 'snapshot_prefix: "int/lenet"').replace("display: 10", "display: 1"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", "long.prototxt"],
                         cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    seen = ""
    deadline = time.time() + 300
    while "Iteration 5 " not in seen and time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen += line
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=120)
    assert p.returncode == 130, seen + rest
    snaps = list((workdir / "int").glob("lenet_iter_*.caffemodel"))
    assert len(snaps) == 1 and (workdir / "int" / (snaps[0].stem + ".solverstate")).exists()
    assert not list((workdir / "int").glob("*.tmp"))

"""A real tiny net (DummyData + InnerProduct + EuclideanLoss): resume is bit-exact, divergence
is reported with the iteration, test nets share the trained weights, logs keep Caffe's lines."""
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from pycaffe_lite.errors import TrainingDivergedError
from pycaffe_lite.log import GlogFormatter
from pycaffe_lite.solvers import get_solver

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


def write_solver(folder, prefix, extra=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.prototxt").write_text(NET)
    path = folder / "solver.prototxt"
    # `net` is relative: not found from the working directory, found next to the solver file
    path.write_text(f'net: "tiny.prototxt"\ntest_iter: 2\ntest_interval: 5\nbase_lr: 0.05\nmomentum: 0.9\n'
                    f'weight_decay: 0.001\nlr_policy: "step"\ngamma: 0.5\nstepsize: 4\nmax_iter: 10\n'
                    f'random_seed: 7\nsnapshot: 5\nsnapshot_prefix: "{prefix}"\n{extra}')
    return str(path)


@pytest.fixture
def logs(caplog):
    """Capture the package logger even when a CLI test switched its propagation off."""
    logger = logging.getLogger("pycaffe_lite")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


def weights(net):
    return [b.data.copy() for b in net.learnable_params]


def test_snapshot_restore_is_bit_exact(tmp_path):
    full = get_solver(write_solver(tmp_path / "a", tmp_path / "a" / "snap"))
    full.solve()
    resumed = get_solver(write_solver(tmp_path / "b", tmp_path / "b" / "snap"))
    resumed.solve(str(tmp_path / "a" / "snap_iter_5.solverstate"))
    assert resumed.iter == full.iter == 10
    for a, b in zip(weights(full.net), weights(resumed.net)):
        assert np.array_equal(a, b)
    for a, b in zip(full.history, resumed.history):
        assert np.array_equal(a.data, b.data)
    assert full.current_step == resumed.current_step == 2


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nan_loss_raises_with_iteration(tmp_path):
    path = write_solver(tmp_path, tmp_path / "snap", "")
    text = Path(path).read_text().replace("base_lr: 0.05", "base_lr: 1e30")
    Path(path).write_text(text)
    solver = get_solver(path)
    with pytest.raises(TrainingDivergedError, match=r"Iteration 1: loss is (inf|nan); first produced by .*"
                                                    r"The last good snapshot is none"):
        solver.solve()
    assert not [f for f in os.listdir(tmp_path) if f.startswith("snap")]  # nothing diverged was saved


def test_weights_field_loads_a_caffemodel(tmp_path):
    first = get_solver(write_solver(tmp_path / "a", tmp_path / "a" / "snap"))
    first.step(2)
    model, _ = first.snapshot()
    second = get_solver(write_solver(tmp_path / "b", tmp_path / "b" / "snap", f'weights: "{model}"\n'))
    for a, b in zip(weights(first.net), weights(second.net)):
        assert np.array_equal(a, b)
    for a, b in zip(first.net.params["ip"], second.test_nets[0].params["ip"]):
        assert np.array_equal(a.data, b.data)


def test_test_net_shares_weights_and_logs(tmp_path, logs):
    solver = get_solver(write_solver(tmp_path, tmp_path / "snap", "display: 5\n"))
    assert len(solver.test_nets) == 1
    solver.solve()
    tn = solver.test_nets[0]
    for a, b in zip(solver.net.params["ip"], tn.params["ip"]):
        assert np.array_equal(a.data, b.data)
    scores = solver.test_scores[0]
    assert set(scores) == {"loss"} and np.isfinite(scores["loss"])
    text = "\n".join(r.getMessage() for r in logs.records)
    num = r"[-+\d.e]+"
    for pattern in [
        r"Solving tiny",
        rf"Iteration 0 \({num} iter/s, {num}s/5 iters\), loss = {num}",
        rf"    Train net output #0: loss = {num} \(\* 1 = {num} loss\)",
        r"Iteration 5, lr = 0\.025",
        r"Iteration 5, Testing net \(#0\)",
        rf"    Test net output #0: loss = {num} \(\* 1 = {num} loss\)",
        r"Snapshotting to binary proto file .*snap_iter_5\.caffemodel",
        r"Snapshotting solver state to binary proto file .*snap_iter_5\.solverstate",
        rf"Iteration 10, loss = {num}",
        r"Iteration 10, Testing net \(#0\)",
        r"Optimization Done\.",
    ]:
        assert re.search(pattern, text), pattern


def test_glog_formatter_prefix():
    rec = logging.LogRecord("pycaffe_lite", logging.INFO, "/x/solver.py", 42, "Iteration %d, loss = %s",
                            (3, "0.5"), None)
    line = GlogFormatter().format(rec)
    assert re.fullmatch(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ solver\.py:42\] Iteration 3, loss = 0\.5", line)
    rec.levelno = logging.WARNING
    assert GlogFormatter().format(rec).startswith("W")

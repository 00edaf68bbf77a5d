"""models/adding_problem: the nets read `plite data adding`'s LMDBs as (T, N, 2) sequences with
matching targets, every variant builds for another T by changing the Slice point alone, and an
LSTM trained briefly on short sequences beats the baseline of predicting 1.

The figures for T = 10, 50, 100 are in models/adding_problem/README.md (models/adding_problem/run.sh).
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from pycaffe_lite.data.adding import prepare_adding
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.solvers import get_solver
from tests.conftest import ROOT

ADD = ROOT / "models" / "adding_problem"


def net_for(name: str, T: int, folder) -> str:
    """The model's prototxt, with the Slice keeping step T - 1 (what run.sh does), in ``folder``."""
    text = (ADD / f"{name}.prototxt").read_text()
    assert "slice_point: 49 " in text
    path = folder / f"{name}_T{T}.prototxt"
    path.write_text(text.replace("slice_point: 49 ", f"slice_point: {T - 1} "))
    return str(path)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name, T", [("lstm", 50), ("gru", 7), ("rnn", 12)])
def test_sequences_and_targets_line_up(name, T, workdir):
    prepare_adding(workdir / "data" / "adding", T=T, n_train=64, n_test=100, seed=1)
    net = Net(net_for(name, T, workdir), phase=TEST)
    loss = net.forward_loss()
    seq, x, cont, target = (net.blobs[b].data for b in ("seq", "x", "cont", "target"))
    assert seq.shape == (100, T, 1, 2) and x.shape == (T, 100, 2) and cont.shape == (T, 100)
    np.testing.assert_array_equal(x[3, 7], seq[7, 3, 0])  # step 3 of stream 7
    assert np.all(cont[0] == 0) and np.all(cont[1:] == 1)
    np.testing.assert_allclose(target.ravel(), (x[:, :, 0] * x[:, :, 1]).sum(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(net.blobs["features"].data, net.blobs[name].data[-1])
    assert net.blobs["sum"].shape == (100, 1) and np.isfinite(loss)


@pytest.mark.slow
def test_a_short_lstm_run_beats_predicting_one(workdir):
    T = 10
    prepare_adding(workdir / "data" / "adding", T=T, n_train=1280, n_test=1000, seed=0)
    text = (ADD / "lstm_solver.prototxt").read_text()
    text = text.replace('"models/adding_problem/lstm.prototxt"', f'"{net_for("lstm", T, workdir)}"')
    for key, value in {"max_iter": 300, "snapshot": 0, "test_interval": 300, "display": 0}.items():
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    solver = get_solver(text)
    solver.step(300)
    test_net = solver.test_nets[0]
    mse = 2 * np.mean([test_net.forward_loss() for _ in range(10)])  # EuclideanLoss = MSE / 2
    assert mse < 0.05, f"test MSE {mse:.4f} after 300 iterations; predicting 1 scores ~0.167"

"""models/seq_mnist (digits read row by row by an LSTM, a GRU and a simple RNN): the sequence
layout, a few training iterations lowering the loss, the deploy nets agreeing with the trained
ones, and snapshot -> restore -> continue equal to an uninterrupted run.

The full training figures are in models/seq_mnist/README.md; they take longer than a unit test
should.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.solvers import get_solver
from tests.conftest import ROOT

SEQ = ROOT / "models" / "seq_mnist"
SOLVERS = {"lstm": "solver.prototxt", "gru": "gru_solver.prototxt", "rnn": "rnn_solver.prototxt"}


@pytest.fixture
def workdir(tmp_path, monkeypatch, mnist_small):
    """A folder where data/mnist holds the small LMDBs (the prototxt's paths are relative)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_small, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def solver_for(name: str, **fields):
    text = (SEQ / SOLVERS[name]).read_text()
    text = text.replace(f'"models/seq_mnist/{name}.prototxt"', f'"{SEQ / (name + ".prototxt")}"')
    fields = {"max_iter": 0, "snapshot": 0, "test_interval": 0, "display": 0, **fields}
    for key, value in fields.items():
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    return get_solver(text)


def test_rows_become_time_steps(workdir):
    net = Net(str(SEQ / "lstm.prototxt"), phase=TEST)  # TEST: the dropout on the features is the identity
    net.forward_loss()
    data, x, cont = net.blobs["data"].data, net.blobs["x"].data, net.blobs["cont"].data
    assert x.shape == (28, 100, 28) and cont.shape == (28, 100) and net.blobs["lstm"].shape == (28, 100, 128)
    np.testing.assert_array_equal(x[5, 3], data[3, 0, 5])  # step 5 of stream 3 = row 5 of digit 3
    assert np.all(cont[0] == 0) and np.all(cont[1:] == 1)
    assert [b.shape for b in net.params["lstm"]] == [(512, 28), (512,), (512, 128)]
    assert net.blobs["features"].shape == (100, 128)
    np.testing.assert_array_equal(net.blobs["features"].data, net.blobs["lstm"].data[-1])


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_a_few_iterations_lower_the_loss_and_deploy_agrees(name, workdir):
    solver = solver_for(name)
    losses = []
    for _ in range(40):
        solver.step(1)
        losses.append(solver.smoothed_loss)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses

    out = workdir / f"{name}.caffemodel"
    solver.net.save(out)
    test_net = Net(str(SEQ / f"{name}.prototxt"), phase=TEST, weights=str(out))
    test_net.forward_loss()
    deploy = Net(str(SEQ / f"{name}_deploy.prototxt"), phase=TEST, weights=str(out))
    images = test_net.blobs["data"].data[:64]
    prob = deploy.forward(data=images)["prob"]
    logits = test_net.blobs["ip"].data[:64].astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(prob, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_snapshot_restore_continue_equals_an_uninterrupted_run(workdir):
    straight = solver_for("lstm")
    straight.step(6)
    expected = [b.data.copy() for b in straight.net.params["lstm"]]

    first = solver_for("lstm", snapshot_prefix=f'"{workdir / "seq"}"')
    first.step(3)
    _, state = first.snapshot()
    resumed = solver_for("lstm")
    resumed.restore(state)
    resumed.step(3)
    for got, want in zip(resumed.net.params["lstm"], expected):
        np.testing.assert_array_equal(got.data, want)

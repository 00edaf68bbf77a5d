"""models/lenet5 (LeNet-5 as published): the architecture, the input mapping, a few training
iterations lowering the loss, and the deploy net agreeing with the trained one.

The full training figure (test accuracy after `plite train --solver models/lenet5/solver.prototxt`)
is in models/lenet5/README.md; it takes longer than a unit test should.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.solvers import get_solver
from tests.conftest import ROOT

LENET5 = ROOT / "models" / "lenet5"

#: the issue's statement of the paper's table I: S2 map -> the C3 maps it feeds
C3_TABLE = {
    0: [0, 4, 5, 6, 9, 10, 11, 12, 14, 15],
    1: [0, 1, 5, 6, 7, 10, 11, 12, 13, 15],
    2: [0, 1, 2, 6, 7, 8, 11, 13, 14, 15],
    3: [1, 2, 3, 6, 7, 8, 9, 12, 14, 15],
    4: [2, 3, 4, 7, 8, 9, 10, 12, 13, 15],
    5: [3, 4, 5, 8, 9, 10, 11, 13, 14, 15],
}


@pytest.fixture
def workdir(tmp_path, monkeypatch, mnist_small):
    """A folder where data/mnist holds the small LMDBs (the prototxt's paths are relative)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_small, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_architecture(workdir):
    net = Net(str(LENET5 / "lenet5_train_test.prototxt"), phase=TRAIN)
    shapes = {name: net.blobs[name].shape[1:] for name in ("input", "C1", "S2", "C3", "S4", "C5", "F6", "output")}
    assert shapes == {"input": (1, 32, 32), "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10),
                      "S4": (16, 5, 5), "C5": (120, 1, 1), "F6": (84,), "output": (10,)}
    mask = net.layer_dict["C3"].connection_mask
    assert {i: list(np.flatnonzero(mask[:, i])) for i in range(6)} == C3_TABLE
    squash = [layer.name for layer in net.layers if layer.type == "ScaledTanH"]
    assert squash == ["C1_squash", "S2_squash", "C3_squash", "S4_squash", "C5_squash", "F6_squash"]
    assert net.params_lr[-1] == 0  # the RBF prototypes are fixed


def test_input_is_padded_with_the_background_and_scaled_as_in_the_paper(workdir):
    net = Net(str(LENET5 / "lenet5_train_test.prototxt"), phase=TEST)
    net.forward_loss()
    x = net.blobs["input"].data
    border = np.concatenate([x[:, :, :2].ravel(), x[:, :, -2:].ravel(), x[:, :, :, :2].ravel(), x[:, :, :, -2:].ravel()])
    np.testing.assert_allclose(border, -0.1, rtol=1e-6)
    assert x.min() == pytest.approx(-0.1, abs=1e-6) and x.max() == pytest.approx(1.175, abs=1e-6)


def test_a_few_iterations_lower_the_loss(workdir):
    solver_text = (LENET5 / "solver.prototxt").read_text()
    solver_text = solver_text.replace('"models/lenet5/lenet5_train_test.prototxt"',
                                      f'"{LENET5 / "lenet5_train_test.prototxt"}"')
    solver_text = re.sub(r"(?m)^(snapshot|test_interval|display): .*$", r"\1: 0", solver_text)
    solver = get_solver(solver_text)
    c3 = solver.net.layer_dict["C3"]
    codes = solver.net.layer_dict["output"].blobs[0].data.copy()
    losses = []
    for _ in range(20):
        solver.step(1)
        losses.append(solver.smoothed_loss)  # average_loss 1: this iteration's loss
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5]), losses
    assert np.all(c3.blobs[0].data[~c3.connection_mask] == 0)
    np.testing.assert_array_equal(solver.net.layer_dict["output"].blobs[0].data, codes)

    # the deploy net, given the trained weights, computes the same penalties as the trained net
    out = workdir / "lenet5.caffemodel"
    solver.net.save(out)
    test_net = Net(str(LENET5 / "lenet5_train_test.prototxt"), phase=TEST, weights=str(out))
    test_net.forward_loss()
    deploy = Net(str(LENET5 / "deploy.prototxt"), phase=TEST, weights=str(out))
    deploy.blobs["data"].reshape(*test_net.blobs["data"].shape)
    deploy.reshape()
    result = deploy.forward(data=test_net.blobs["data"].data)
    np.testing.assert_allclose(deploy.blobs["output"].data, test_net.blobs["output"].data, rtol=1e-5)
    predicted = result["prob"].argmax(axis=1)
    np.testing.assert_array_equal(predicted, test_net.blobs["output"].data.argmin(axis=1))

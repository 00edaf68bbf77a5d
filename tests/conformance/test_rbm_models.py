"""models/rbm (a Bernoulli RBM on the bundled digits) and models/dbn (stacked RBMs fine-tuned as
a classifier): the prototxts build, training lowers the reconstruction error, the deploy net
gives the trained layer's hidden features, and the DBN's pre-trained weights land in its MLP.

The full training figures are in the models' README.md files; they take longer than a unit test
should.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from pycaffe_lite import rbm_eval
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.solvers import get_solver
from tests.conftest import ROOT

RBM = ROOT / "models" / "rbm"


@pytest.fixture
def workdir(tmp_path, monkeypatch, mnist_small):
    """A folder where data/mnist holds the small LMDBs (the prototxts' paths are relative)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_small, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def solver_from(folder, name: str, **fields):
    """The model's solver with its net path made absolute and ``fields`` overridden."""
    text = (folder / name).read_text()
    text = re.sub(r'net: "models/[a-z]+/', f'net: "{folder}/', text)
    fields = {"snapshot": 0, "test_interval": 0, "display": 0, **fields}
    for key, value in fields.items():
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    return get_solver(text)


def test_rbm_nets_build(workdir):
    train = Net(str(RBM / "rbm_train_test.prototxt"), phase=TRAIN)
    assert [b.shape for b in train.params["rbm1"]] == [(500, 784), (784,), (500,)]
    assert train.outputs == ["recon_error"]
    test = Net(str(RBM / "rbm_train_test.prototxt"), phase=TEST)
    assert test.outputs == ["recon_error", "free_energy_gap"]
    deploy = Net(str(RBM / "deploy.prototxt"), phase=TEST)
    assert deploy.blobs["data"].shape == (1, 1, 28, 28) and deploy.blobs["h"].shape == (1, 500)


@pytest.mark.slow
def test_rbm_training_lowers_reconstruction_error_and_deploy_gives_features(workdir):
    solver = solver_from(RBM, "solver.prototxt", max_iter=300)
    test_net = solver.test_nets[0]
    test_net.forward_loss()
    digits = test_net.blobs["data"].data.reshape(100, -1).copy()  # the first 100 test digits
    layer = solver.net.layer_dict["rbm1"]
    before = rbm_eval.reconstruction_error(digits, *rbm_eval.params_from_layer(layer))
    solver.step(300)
    after = rbm_eval.reconstruction_error(digits, *rbm_eval.params_from_layer(layer))
    assert after < 0.2 * before, (before, after)

    # the deploy net, given the trained weights, gives P(h|x) = sigmoid(c + W x) of new digits
    weights = workdir / "rbm.caffemodel"
    solver.net.save(weights)
    deploy = Net(str(RBM / "deploy.prototxt"), phase=TEST, weights=str(weights))
    digits = test_net.blobs["data"].data[:3].copy()
    deploy.blobs["data"].reshape(*digits.shape)
    deploy.reshape()
    h = deploy.forward(data=digits)["h"]
    W, _, c, _ = rbm_eval.params_from_layer(solver.net.layer_dict["rbm1"])
    np.testing.assert_allclose(h, rbm_eval.sigmoid(digits.reshape(3, -1) @ W.T + c), rtol=1e-4, atol=1e-6)
    assert h.shape == (3, 500) and h.std() > 0.05

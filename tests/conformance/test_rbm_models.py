"""models/rbm (a Bernoulli RBM on the bundled digits) and models/dbn (stacked RBMs fine-tuned as
a classifier): the prototxts build, training lowers the reconstruction error, the deploy net
gives the trained layer's hidden features, and the DBN's pre-trained weights land in its MLP.

The full training figures are in the models' README.md files; they take longer than a unit test
should.
"""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from pycaffe_lite import rbm_eval
from pycaffe_lite.errors import DataError
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
    solver = solver_from(RBM, "solver.prototxt", max_iter=200)
    test_net = solver.test_nets[0]
    test_net.forward_loss()
    digits = test_net.blobs["data"].data.reshape(100, -1).copy()  # the first 100 test digits
    layer = solver.net.layer_dict["rbm1"]
    before = rbm_eval.reconstruction_error(digits, *rbm_eval.params_from_layer(layer))
    solver.step(200)
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


# ------------------------------------------------------------------------------ models/dbn
DBN = ROOT / "models" / "dbn"


def load_tool():
    spec = importlib.util.spec_from_file_location("rbm_to_ip", ROOT / "tools" / "rbm_to_ip.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_dbn_nets_build(workdir):
    rbm2 = Net(str(DBN / "rbm2.prototxt"), phase=TRAIN)
    assert rbm2.outputs == ["recon_error2"]
    assert [b.shape for b in rbm2.params["h2"]] == [(500, 500), (500,), (500,)]
    mlp = Net(str(DBN / "mlp.prototxt"), phase=TEST)
    assert [b.shape for b in mlp.params["h1"]] == [(500, 784), (500,)]
    assert [b.shape for b in mlp.params["h2"]] == [(500, 500), (500,)]
    deploy = Net(str(DBN / "deploy.prototxt"), phase=TEST)
    assert deploy.blobs["prob"].shape == (1, 10)


@pytest.mark.slow
def test_greedy_pretraining_then_the_mlp_starts_from_the_rbms(workdir):
    """A few iterations of each step of models/dbn/run.sh: RBM 1, RBM 2 on frozen RBM 1, the
    conversion, and the MLP computing the stacked RBMs' P(h2|h1(x)) from the copied weights."""
    rbm1 = solver_from(DBN, "rbm1_solver.prototxt", max_iter=20)
    rbm1.step(20)
    rbm1_file = workdir / "rbm1.caffemodel"
    rbm1.net.save(rbm1_file)

    rbm2 = solver_from(DBN, "rbm2_solver.prototxt", max_iter=20)
    rbm2.net.copy_from(str(rbm1_file))
    h1_before = [b.data.copy() for b in rbm2.net.params["h1"]]
    h2_before = rbm2.net.params["h2"][0].data.copy()
    rbm2.step(20)
    for frozen, before in zip(rbm2.net.params["h1"], h1_before):
        np.testing.assert_array_equal(frozen.data, before)  # RBM 1 is only a feature layer here
    assert not np.allclose(rbm2.net.params["h2"][0].data, h2_before)
    rbm2_file = workdir / "rbm2.caffemodel"
    rbm2.net.save(rbm2_file)

    pretrained = workdir / "pretrained.caffemodel"
    assert load_tool().main([str(rbm1_file), str(rbm2_file), "-o", str(pretrained)]) == 0
    mlp = Net(str(DBN / "mlp.prototxt"), phase=TEST, weights=str(pretrained))
    for name in ("h1", "h2"):
        W, _, c, _ = rbm_eval.params_from_layer(rbm2.net.layer_dict[name])
        np.testing.assert_array_equal(mlp.params[name][0].data, W)
        np.testing.assert_array_equal(mlp.params[name][1].data, c)
    mlp.forward_loss()
    x = mlp.blobs["data"].data.reshape(100, -1)
    h1 = rbm_eval.sigmoid(x @ mlp.params["h1"][0].data.T.astype(np.float64) + mlp.params["h1"][1].data)
    h2 = rbm_eval.sigmoid(h1 @ rbm_eval.params_from_layer(rbm2.net.layer_dict["h2"])[0].T
                          + rbm2.net.params["h2"][2].data)
    np.testing.assert_allclose(mlp.blobs["h2"].data, h2, rtol=1e-4, atol=1e-5)


def test_rbm_to_ip_renames_and_reports_errors(tmp_path):
    tool = load_tool()
    net_text = ('name: "n" layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } } '
                'layer { name: "r" type: "RBM" bottom: "x" top: "h" rbm_param { num_hidden: 4 '
                'hidden_bias_filler { type: "gaussian" std: 1 } } }')
    (tmp_path / "rbm.prototxt").write_text(net_text)
    rbm = Net(str(tmp_path / "rbm.prototxt"), phase=TEST)
    rbm.save(tmp_path / "rbm.caffemodel")
    out = tmp_path / "ip.caffemodel"
    assert tool.rbm_to_ip([tmp_path / "rbm.caffemodel"], out, {"r": "fc"}) == ["fc"]
    (tmp_path / "ip.prototxt").write_text(
        'name: "m" layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } } '
        'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 4 } }')
    ip = Net(str(tmp_path / "ip.prototxt"), phase=TEST, weights=str(out))
    np.testing.assert_array_equal(ip.params["fc"][0].data, rbm.params["r"][0].data)
    np.testing.assert_array_equal(ip.params["fc"][1].data, rbm.params["r"][2].data)

    ip.save(tmp_path / "plain.caffemodel")
    with pytest.raises(DataError, match=r"no layer of type RBM in .*plain.caffemodel; give the caffemodels"):
        tool.rbm_to_ip([tmp_path / "plain.caffemodel"], out)
    with pytest.raises(DataError, match=r"--rename names 'q', but the inputs have no RBM layer of that name "
                                        r"\(RBM layers: 'r'\)"):
        tool.rbm_to_ip([tmp_path / "rbm.caffemodel"], out, {"q": "fc"})
    with pytest.raises(DataError, match=r"--rename takes OLD=NEW .* got 'r:fc'"):
        tool._parse_rename(["r:fc"])

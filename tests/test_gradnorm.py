"""`plite gradnorm` (pycaffe_lite/gradnorm.py): the per-step hidden-state gradient of a recurrent
layer, checked where it is known exactly, its errors, the plot, and the verb end to end."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.errors import NetConfigError, PliteError
from pycaffe_lite.gradnorm import HiddenGradNorms, hidden_grad_norms, plot_grad_norms
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net

T, N, I, H = 16, 3, 2, 5


def net_text(type_: str = "RNN", loss: bool = True) -> str:
    """x (T, N, I) -> recurrent layer -> its last step -> EuclideanLoss against zeros."""
    text = f"""name: "g"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: {T} dim: {N} dim: {I} }} }} }}
layer {{ name: "cont" type: "SequenceIndicator" bottom: "x" top: "cont" }}
layer {{ name: "rec" type: "{type_}" bottom: "x" bottom: "cont" top: "rec"
  recurrent_param {{ num_output: {H} weight_filler {{ type: "uniform" min: -0.5 max: 0.5 }}
    bias_filler {{ type: "constant" value: 0.3 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "rec" top: "ip"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}
"""
    if loss:
        text += f"""layer {{ name: "last" type: "Slice" bottom: "rec" top: "first" top: "last"
  slice_param {{ axis: 0 slice_point: {T - 1} }} }}
layer {{ name: "silence" type: "Silence" bottom: "first" bottom: "ip" }}
layer {{ name: "feat" type: "Reshape" bottom: "last" top: "feat" reshape_param {{ shape {{ dim: {N} dim: {H} }} }} }}
layer {{ name: "target" type: "Input" top: "target" input_param {{ shape {{ dim: {N} dim: {H} }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "feat" bottom: "target" top: "loss" }}
"""
    return text


def make_net(type_: str = "RNN", loss: bool = True, scale: float = 1.0) -> Net:
    net = Net(net_text(type_, loss), phase=TEST)
    net.blobs["x"].data[...] = np.random.default_rng(0).uniform(-scale, scale, (T, N, I))
    return net


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_ratio_is_gamma_when_the_jacobians_are_gamma_times_identity(gamma):
    # W_hh = gamma I, tiny inputs and zero bias: a_t ~ 1e-4, tanh'(a_t) = 1 - O(1e-8), so
    # dJ/dh_k = W_hh^T diag(tanh'(a_{k+1})) dJ/dh_{k+1} = gamma dJ/dh_{k+1}.
    net = make_net("RNN", scale=1e-3)
    _w_xh, b_h, w_hh, _w_ho, b_o = net.params["rec"]
    b_h.data[...] = 0
    w_hh.data[...] = gamma * np.eye(H, dtype=np.float32)
    b_o.data[...] = 0.5  # the output, so the loss's gradient, is not ~0
    r = hidden_grad_norms(net, "rec")
    assert r.T == T and r.norms.shape == (T,) and np.all(r.norms > 0)
    np.testing.assert_allclose(r.norms[:-1] / r.norms[1:], gamma, rtol=1e-4)
    assert r.ratio_per_step() == pytest.approx(gamma, rel=1e-4)


def test_rnn_record_is_the_gradient_that_reaches_the_input():
    # dJ/dx_k = W_xh^T (dJ/dh_k * tanh'(a_k)), tanh' = 1 - h^2: an independent path to dJ/dh_k.
    net = make_net("RNN")
    net.forward_loss()
    net.backward()  # the RNN's bottom x gets no diff in a plain backward: recompute it below
    li = net.layer_names.index("rec")
    layer = net.layers[li]
    record = np.zeros((T, N, H), np.float32)
    layer.record_hidden_diff = record
    top, bottom = net.top_vecs[li], net.bottom_vecs[li]
    layer.run_backward(top, [True, False], bottom)
    layer.record_hidden_diff = None
    h = layer._bufs["gates"]  # the RNN keeps h_t there after its forward
    w_xh = net.params["rec"][0].data
    np.testing.assert_allclose(bottom[0].diff, (record * (1 - h * h)) @ w_xh, rtol=1e-4, atol=1e-7)
    assert np.all(record[:-1] != 0)


@pytest.mark.parametrize("type_", ["LSTM", "GRU"])
def test_last_step_gradient_is_the_top_diff_and_earlier_ones_are_nonzero(type_):
    net = make_net(type_)
    r = hidden_grad_norms(net, "rec")
    top_diff = net.blobs["rec"].diff[-1]  # the layer's output is h itself
    assert r.norms[-1] == pytest.approx(np.linalg.norm(top_diff), rel=1e-5)
    assert np.all(r.norms[:-1] > 0)
    assert not np.any(net.blobs["rec"].diff[:-1])  # only the last step's share was kept


def test_all_steps_keeps_every_steps_share_and_iterations_average():
    net = make_net("LSTM")
    one = hidden_grad_norms(net, "rec", last_step_only=True)
    every = hidden_grad_norms(net, "rec", last_step_only=False, iterations=3)
    # the last step's share is all there is in this net (Slice keeps step T - 1 only)
    np.testing.assert_allclose(every.norms, one.norms, rtol=1e-5)
    assert every.batches == 3 and "mean ratio per step" in every.format_table()


def test_random_direction_works_without_a_loss():
    net = make_net("GRU", loss=False)
    r = hidden_grad_norms(net, "rec", grad="random")
    assert r.norms[-1] == pytest.approx(1.0, rel=1e-5)  # a unit direction on h_T
    assert np.all(r.norms > 0) and "random unit direction" in r.format_table()


@pytest.mark.parametrize("layer, grad, message", [
    ("nope", "loss", r"net 'g' has no layer named 'nope' \(recurrent layers in net 'g': rec\)"),
    ("ip", "loss", (r"layer 'ip' \(InnerProduct\) is not a recurrent layer \(RNN, LSTM or GRU\); recurrent layers "
                   r"in net 'g': rec")),
    ("rec", "loss", (r"layer 'rec' \(RNN\): the net's loss sends no gradient to its output 'rec' at the last step; "
                    r"use grad='random' \(--grad random\)")),
])
def test_errors(layer, grad, message):
    net = make_net("RNN", loss=False)
    with pytest.raises(NetConfigError, match=message):
        hidden_grad_norms(net, layer, grad=grad)
    assert net.layers[net.layer_names.index("rec")].record_hidden_diff is None


@pytest.mark.parametrize("kwargs, message", [
    ({"iterations": 0}, r"--iterations must be at least 1, got 0"),
    ({"grad": "ones"}, r"grad must be 'loss' or 'random', got 'ones'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(PliteError, match=message):
        hidden_grad_norms(make_net("RNN"), "rec", **kwargs)


def test_pillow_plot_without_matplotlib(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    results = [HiddenGradNorms("rnn", "RNN", 0.5 ** np.arange(20.0)[::-1], 1, 4, "loss"),
               HiddenGradNorms("lstm", "LSTM", np.linspace(0.5, 1.0, 20), 1, 4, "loss")]
    out = tmp_path / "g.png"
    assert plot_grad_norms(results, str(out)) == "pillow"
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (700, 420)
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    assert (pixels == (31, 119, 180)).all(axis=1).sum() > 100  # the first curve was drawn


def test_cli_prints_the_table_and_writes_the_png(tmp_path, capsys):
    model = tmp_path / "net.prototxt"
    model.write_text(net_text("RNN"))
    out = tmp_path / "grad.png"
    assert main(["gradnorm", "--model", str(model), "--layer", "rec", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"layer 'rec' (RNN): T = {T}, 1 batch(es) of {N} streams" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip()[:1].isdigit()]
    assert [int(row[0]) for row in rows] == list(range(T, 0, -1))
    assert "mean ratio per step" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["gradnorm", "--model", str(model), "--layer", "ip"]) == 1
    assert "layer 'ip' (InnerProduct) is not a recurrent layer" in capsys.readouterr().err


def test_underflow_is_reported_and_the_ratio_uses_the_nonzero_steps():
    norms = np.array([0, 0, 0.125, 0.25, 0.5, 1.0])
    r = HiddenGradNorms("rnn", "RNN", norms, 1, 2, "loss")
    assert r.first_nonzero_step() == 3 and r.ratio_per_step() == pytest.approx(0.5)
    table = r.format_table()
    assert "||dJ/dh_k|| is 0 for k < 3" in table
    assert "(||dJ/dh_3|| / ||dJ/dh_T||)^(1/(T-3)) = 0.5" in table
    assert np.isnan(HiddenGradNorms("rnn", "RNN", np.zeros(4), 1, 2, "loss").ratio_per_step())


@pytest.mark.parametrize("type_", ["RNN", "LSTM", "GRU"])
def test_recording_leaves_the_gradients_alone(type_):
    net = make_net(type_)
    net.forward_loss()
    li = net.layer_names.index("rec")
    layer, top, bottom = net.layers[li], net.top_vecs[li], net.bottom_vecs[li]
    net._backward(end=li + 1)
    grads = []
    for record in (None, np.zeros((T, N, H), np.float32)):
        for b in layer.blobs:
            b.diff[...] = 0
        layer.record_hidden_diff = record
        layer.run_backward(top, [True, False], bottom)
        grads.append([bottom[0].diff.copy()] + [b.diff.copy() for b in layer.blobs])
    layer.record_hidden_diff = None
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)

"""RBF (Euclidean RBF units) and RBFLoss (LeCun et al.'s criterion): forward against float64,
gradients, the fixed +1/-1 code and its lr_mult 0, labels, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.layers.rbf import random_sign_code
from pycaffe_lite.net import Net
from pycaffe_lite.testing import check_gradient

from .layer_test_template import blob_from, forward, setup_layer

GRADIENT_CHECKED = {"RBF", "RBFLoss"}


def rbf_reference(x, W):
    x, W = x.reshape(x.shape[0], -1).astype(np.float64), W.astype(np.float64)
    return ((x[:, None, :] - W[None, :, :]) ** 2).sum(axis=2)


def loss_reference(y, labels, j):
    y = y.astype(np.float64)
    per = [y[n, int(labels[n])] + np.log(np.exp(-j) + np.exp(-y[n]).sum()) for n in range(len(labels))]
    return np.mean(per)


# --- RBF ------------------------------------------------------------------------------
def test_rbf_forward_matches_reference():
    layer, bottom, top = setup_layer('type: "RBF" rbf_param { num_output: 10 }', [(5, 2, 6, 7)])
    assert top[0].shape == (5, 10) and layer.blobs[0].shape == (10, 84)
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, rbf_reference(bottom[0].data, layer.blobs[0].data), rtol=1e-5)


def test_rbf_output_is_zero_at_a_prototype():
    layer, bottom, top = setup_layer('type: "RBF" rbf_param { num_output: 3 }', [(1, 84)])
    bottom[0].data[...] = layer.blobs[0].data[1]
    forward(layer, bottom, top)
    assert top[0].data[0, 1] == 0 and top[0].data[0].argmin() == 1


def test_rbf_default_code_is_fixed_plus_minus_one_and_not_learned():
    layer, _, _ = setup_layer('type: "RBF" rbf_param { num_output: 10 }', [(2, 84)])
    W = layer.blobs[0].data
    assert set(np.unique(W)) == {-1.0, 1.0}
    np.testing.assert_array_equal(W, random_sign_code(10, 84, 1998))
    again, _, _ = setup_layer('type: "RBF" rbf_param { num_output: 10 }', [(2, 84)])
    np.testing.assert_array_equal(again.blobs[0].data, W)
    other, _, _ = setup_layer('type: "RBF" rbf_param { num_output: 10 code_seed: 7 }', [(2, 84)])
    assert not np.array_equal(other.blobs[0].data, W)
    spec = layer.layer_param.param
    assert len(spec) == 1 and spec[0].lr_mult == 0 and spec[0].decay_mult == 0


def test_rbf_prototypes_fixed_in_a_net_unless_asked():
    text = """layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 8 }} }} }}
              layer {{ name: "out" type: "RBF" bottom: "x" top: "y" {param} rbf_param {{ num_output: 3 }} }}"""
    assert Net(text.format(param=""), phase=0).params_lr == [0.0]
    assert Net(text.format(param="param { lr_mult: 1 }"), phase=0).params_lr == [1.0]


def test_rbf_weight_filler_replaces_the_code():
    layer, _, _ = setup_layer('type: "RBF" rbf_param { num_output: 4 weight_filler { type: "constant" value: 0.5 } }',
                              [(2, 3)])
    assert np.all(layer.blobs[0].data == 0.5)


def test_rbf_gradient():
    layer, bottom, top = setup_layer(
        'type: "RBF" rbf_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } }', [(3, 2, 3)])
    assert check_gradient(layer, bottom, top, setup=False) > 0


def test_rbf_axis():
    layer, bottom, top = setup_layer('type: "RBF" rbf_param { num_output: 2 axis: 2 }', [(2, 3, 4)])
    assert top[0].shape == (2, 3, 2)
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data.reshape(6, 2), rbf_reference(bottom[0].data.reshape(6, 4),
                                                                         layer.blobs[0].data), rtol=1e-5)


@pytest.mark.parametrize("param, error, message", [
    ("", NetConfigError, r"layer 'rbf' \(RBF\): rbf_param.num_output must be set to a positive number"),
    ("num_output: 2 axis: 3", ShapeError, r"rbf_param.axis 3 is out of range for bottom shape \(2, 5\)"),
])
def test_rbf_config_errors(param, error, message):
    with pytest.raises(error, match=message):
        setup_layer(f'type: "RBF" rbf_param {{ {param} }}', [(2, 5)])


def test_rbf_input_size_change_is_refused():
    layer, bottom, top = setup_layer('type: "RBF" rbf_param { num_output: 2 }', [(2, 5)])
    bottom[0].reshape(2, 6)
    with pytest.raises(ShapeError, match=r"bottom shape \(2, 6\) flattens from axis 1 to 6 inputs, but the "
                                         r"prototypes have shape \(2, 5\) \(5 inputs\)"):
        forward(layer, bottom, top)


# --- RBFLoss --------------------------------------------------------------------------
LABELS = np.array([0, 3, 1, 2, 3], np.float32)


def penalties(seed=0):
    return np.random.default_rng(seed).uniform(0, 4, (5, 4)).astype(np.float32)


@pytest.mark.parametrize("j", [0.0, 2.5, -1.0])
def test_loss_forward_matches_reference(j):
    y = penalties()
    layer, bottom, top = setup_layer(f'type: "RBFLoss" rbf_loss_param {{ j: {j} }}', [y, LABELS])
    assert forward(layer, bottom, top) == pytest.approx(loss_reference(y, LABELS, j), rel=1e-6)


def test_loss_is_stable_for_large_penalties():
    y = penalties() + 5000
    layer, bottom, top = setup_layer('type: "RBFLoss" rbf_loss_param { j: 1 }', [y, LABELS])
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # exp(-5000) may underflow to 0
        loss = forward(layer, bottom, top)
    # exp(-j) dominates: E = y_label + log(exp(-j) + ...) ~ y_label - j
    assert loss == pytest.approx(np.mean(y[np.arange(5), LABELS.astype(int)]) - 1, rel=1e-6)


@pytest.mark.parametrize("j", [0.0, 1.5])
def test_loss_gradient(j):
    layer, bottom, top = setup_layer(f'type: "RBFLoss" rbf_loss_param {{ j: {j} }} loss_weight: 2',
                                     [penalties(), LABELS])
    assert check_gradient(layer, bottom, top, check_bottom=[0], setup=False) > 0


def test_loss_ignore_label():
    y = penalties()
    labels = LABELS.copy()
    labels[1] = -1
    layer, bottom, top = setup_layer('type: "RBFLoss" loss_param { ignore_label: -1 }', [y, labels])
    keep = [0, 2, 3, 4]
    assert forward(layer, bottom, top) == pytest.approx(loss_reference(y[keep], labels[keep], 0.0), rel=1e-6)
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)
    layer.run_backward(top, [True, False], bottom)
    assert np.all(bottom[0].diff[1] == 0)


def test_loss_errors():
    with pytest.raises(DataError, match=r"layer 'rbfloss' \(RBFLoss\): label 4 is out of range for 4 classes"):
        layer, bottom, top = setup_layer('type: "RBFLoss"', [penalties(), LABELS + 1])
        forward(layer, bottom, top)
    with pytest.raises(ShapeError, match=r"one label per sample is needed \(5 labels, integers in \[0, 4\)\)"):
        setup_layer('type: "RBFLoss"', [penalties(), blob_from(np.zeros((5, 2)))])
    layer, bottom, top = setup_layer('type: "RBFLoss"', [penalties(), LABELS])
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match=r"cannot backpropagate to the label input"):
        layer.run_backward(top, [True, True], bottom)

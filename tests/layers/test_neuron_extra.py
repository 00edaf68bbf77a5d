"""PReLU, ELU, AbsVal, Power, Exp, Log, BNLL, Threshold, Clip, Swish: forward vs float64,
hand-computed cases, gradients (kinks skipped), in place, errors."""

import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.testing import check_gradient

from .layer_test_template import assert_in_place_matches, backward, forward, make_layer, setup_layer

GRADIENT_CHECKED = {"PReLU", "ELU", "AbsVal", "Power", "Exp", "Log", "BNLL", "Clip", "Swish"}

SHAPE = (2, 3, 4, 5)


def run(text, x):
    layer, bottom, top = setup_layer(text, [np.asarray(x, np.float64)])
    forward(layer, bottom, top)
    return layer, bottom, top


def x64(bottom):
    return bottom[0].data.astype(np.float64)


# --- PReLU ----------------------------------------------------------------------------
def test_prelu_default_slope_and_shapes():
    layer, _, top = setup_layer('type: "PReLU"', [SHAPE])
    assert top[0].shape == SHAPE
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.25)
    shared, _, _ = setup_layer('type: "PReLU" prelu_param { channel_shared: true }', [SHAPE])
    assert shared.blobs[0].shape == () and shared.blobs[0].data == np.float32(0.25)


def test_prelu_forward_per_channel():
    layer, bottom, top = setup_layer(
        'type: "PReLU" prelu_param { filler { type: "uniform" min: 0.1 max: 0.9 } }', [SHAPE])
    forward(layer, bottom, top)
    x, a = x64(bottom), layer.blobs[0].data.astype(np.float64)[None, :, None, None]
    np.testing.assert_allclose(top[0].data, np.maximum(x, 0) + a * np.minimum(x, 0), rtol=1e-6)


def test_prelu_hand_case_2d_bottom():
    layer, bottom, top = setup_layer('type: "PReLU"', [np.array([[-4.0, 2.0], [1.0, -8.0]])])
    layer.blobs[0].data[...] = [0.5, 0.25]
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [[-2.0, 2.0], [1.0, -2.0]])
    backward(layer, bottom, top, [np.ones((2, 2))])
    np.testing.assert_array_equal(bottom[0].diff, [[0.5, 1.0], [1.0, 0.25]])
    np.testing.assert_array_equal(layer.blobs[0].diff, [-4.0, -8.0])  # sum of dy * x where x <= 0


@pytest.mark.parametrize("shared", ["false", "true"])
def test_prelu_gradient(shared):
    layer, bottom, top = setup_layer(
        f'type: "PReLU" prelu_param {{ channel_shared: {shared} filler {{ type: "uniform" min: 0.1 max: 0.5 }} }}',
        [SHAPE])
    check_gradient(layer, bottom, top, kink=0.0, kink_range=0.01, setup=False)


def test_prelu_in_place_and_accumulates_slope_diff():
    assert_in_place_matches('type: "PReLU"', SHAPE)
    layer, bottom, top = setup_layer('type: "PReLU"', [SHAPE])
    forward(layer, bottom, top)
    backward(layer, bottom, top, [np.ones(SHAPE)])
    once = layer.blobs[0].diff.copy()
    layer.run_backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once, rtol=1e-6)  # += (iter_size)


def test_prelu_loads_caffe_scalar_blob():
    # Caffe writes a 0-axis blob without a shape; it reads back as (1,)
    layer = make_layer('name: "p" type: "PReLU" prelu_param { channel_shared: true } '
                       'blobs { data: 0.1 }')
    layer.set_up([Blob((2, 3))], [Blob()])
    assert layer.blobs[0].shape == () and layer.blobs[0].data == np.float32(0.1)


def test_prelu_errors():
    with pytest.raises(ShapeError, match=r"layer 'p' \(PReLU\).*at least 2 axes"):
        setup_layer('name: "p" type: "PReLU"', [(5,)])
    layer, bottom, top = setup_layer('name: "p" type: "PReLU"', [SHAPE])
    bottom[0].reshape(2, 4, 4, 5)
    with pytest.raises(ShapeError, match="set up for 3 channels"):
        forward(layer, bottom, top)


# --- ELU ------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_elu_forward_and_gradient(alpha):
    text = f'type: "ELU" elu_param {{ alpha: {alpha} }}'
    layer, bottom, top = setup_layer(text, [SHAPE])
    bottom[0].data[...] *= 3
    forward(layer, bottom, top)
    x = x64(bottom)
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, alpha * (np.exp(x) - 1)), rtol=1e-6, atol=1e-7)
    check_gradient(layer, bottom, top, kink=0.0, kink_range=0.01, setup=False)


def test_elu_hand_case_and_in_place():
    _, _, top = run('type: "ELU" elu_param { alpha: 2 }', [-np.log(2.0), 0.0, 3.0])
    np.testing.assert_allclose(top[0].data, [-1.0, 0.0, 3.0], rtol=1e-6)
    assert_in_place_matches('type: "ELU"', SHAPE)
    assert_in_place_matches('type: "ELU" elu_param { alpha: -0.5 }', SHAPE)  # y > 0 for x < 0 here


# --- AbsVal ---------------------------------------------------------------------------
def test_absval_forward_backward_and_gradient():
    layer, bottom, top = run('type: "AbsVal"', [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(top[0].data, [2.0, 0.0, 3.0])
    backward(layer, bottom, top, [np.array([5.0, 5.0, 5.0])])
    np.testing.assert_array_equal(bottom[0].diff, [-5.0, 0.0, 5.0])  # sign(0) = 0
    layer, bottom, top = setup_layer('type: "AbsVal"', [SHAPE])
    check_gradient(layer, bottom, top, kink=0.0, kink_range=0.01, setup=False)
    assert LAYERS.get("ABSVAL") is type(layer)


def test_absval_refuses_in_place():
    layer = make_layer('name: "abs" type: "AbsVal"')
    b = Blob(SHAPE)
    with pytest.raises(NetConfigError, match=r"layer 'abs' \(AbsVal\): AbsVal cannot run in place"):
        layer.set_up([b], [b])


# --- Power ----------------------------------------------------------------------------
POWER_CASES = [(0.37, 0.83, 1.7), (2.0, 0.34, 1.2), (-0.5, 0.5, 2.0), (1.0, 0.5, 0.3), (0.0, 0.8, 1.0),
               (3.0, 0.0, 1.5)]


@pytest.mark.parametrize("power,scale,shift", POWER_CASES)
def test_power_forward_and_gradient(power, scale, shift):
    text = f'type: "Power" power_param {{ power: {power} scale: {scale} shift: {shift} }}'
    layer, bottom, top = setup_layer(text, [SHAPE])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, (shift + scale * x64(bottom)) ** power, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_power_hand_case_and_in_place():
    layer, bottom, top = run('type: "Power" power_param { power: 2 scale: 3 shift: 1 }', [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(top[0].data, [4.0, 1.0, 16.0])
    backward(layer, bottom, top, [np.ones(3)])
    np.testing.assert_array_equal(bottom[0].diff, [-12.0, 6.0, 24.0])  # 2 * 3 * (1 + 3x)
    assert_in_place_matches('type: "Power" power_param { power: 0.5 scale: 0.5 shift: 2 }', SHAPE)


# --- Exp / Log ------------------------------------------------------------------------
@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (2, 0.5, 1), (10, -0.3, -0.2), (-1, 2, 0.5)])
def test_exp_forward_and_gradient(base, scale, shift):
    text = f'type: "Exp" exp_param {{ base: {base} scale: {scale} shift: {shift} }}'
    layer, bottom, top = setup_layer(text, [SHAPE])
    forward(layer, bottom, top)
    b = np.e if base == -1 else base
    np.testing.assert_allclose(top[0].data, b ** (shift + scale * x64(bottom)), rtol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (2, 0.5, 1), (10, 3, 4), (-1, 2, 2.5)])
def test_log_forward_and_gradient(base, scale, shift):
    text = f'type: "Log" log_param {{ base: {base} scale: {scale} shift: {shift} }}'
    layer, bottom, top = setup_layer(text, [SHAPE])
    bottom[0].data[...] = np.abs(bottom[0].data) + 0.5  # shift + scale x > 0
    forward(layer, bottom, top)
    lb = 1.0 if base == -1 else np.log(base)
    np.testing.assert_allclose(top[0].data, np.log(shift + scale * x64(bottom)) / lb, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_exp_log_hand_cases_and_in_place():
    _, _, top = run('type: "Exp" exp_param { base: 2 scale: 1 shift: 1 }', [0.0, 1.0, 3.0])
    np.testing.assert_allclose(top[0].data, [2.0, 4.0, 16.0], rtol=1e-6)
    layer, bottom, top = run('type: "Log" log_param { base: 10 }', [1.0, 10.0, 1000.0])
    np.testing.assert_allclose(top[0].data, [0.0, 1.0, 3.0], atol=1e-6)
    backward(layer, bottom, top, [np.ones(3)])
    np.testing.assert_allclose(bottom[0].diff, 1 / (np.array([1.0, 10.0, 1000.0]) * np.log(10)), rtol=1e-6)
    assert_in_place_matches('type: "Exp" exp_param { base: 3 scale: 0.5 }', SHAPE)
    assert_in_place_matches('type: "Log" log_param { shift: 2 }', SHAPE)


@pytest.mark.parametrize("text,message", [
    ('name: "e" type: "Exp" exp_param { base: -2 }', r"layer 'e' \(Exp\): base must be strictly positive"),
    ('name: "e" type: "Exp" exp_param { base: 0 }', "base must be strictly positive"),
    ('name: "l" type: "Log" log_param { base: 1 }', r"layer 'l' \(Log\): base 1 has no logarithm"),
])
def test_exp_log_bad_base(text, message):
    with pytest.raises(NetConfigError, match=message):
        setup_layer(text, [SHAPE])


# --- BNLL -----------------------------------------------------------------------------
def test_bnll_forward_is_stable_and_gradient():
    layer, bottom, top = run('type: "BNLL"', [-1000.0, -20.0, 0.0, 20.0, 1000.0])
    np.testing.assert_allclose(top[0].data, np.logaddexp(0, [-1000.0, -20.0, 0.0, 20.0, 1000.0]), rtol=1e-6)
    backward(layer, bottom, top, [np.ones(5)])
    np.testing.assert_allclose(bottom[0].diff, [0.0, 1 / (1 + np.exp(20.0)), 0.5, 1 / (1 + np.exp(-20.0)), 1.0],
                               rtol=1e-5)
    layer, bottom, top = setup_layer('type: "BNLL"', [SHAPE])
    bottom[0].data[...] *= 5
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, np.log1p(np.exp(x64(bottom))), rtol=1e-6)
    check_gradient(layer, bottom, top, setup=False)
    assert_in_place_matches('type: "BNLL"', SHAPE)


# --- Threshold ------------------------------------------------------------------------
def test_threshold_forward_in_place_and_no_backward():
    layer, bottom, top = run('name: "th" type: "Threshold" threshold_param { threshold: 0.5 }',
                             [0.2, 0.5, 0.7, -3.0])
    np.testing.assert_array_equal(top[0].data, [0.0, 0.0, 1.0, 0.0])  # strictly greater
    b = Blob((4,))
    b.data[...] = [0.2, 0.5, 0.7, -3.0]
    layer = make_layer('type: "Threshold" threshold_param { threshold: 0.5 }')
    layer.set_up([b], [b])
    forward(layer, [b], [b])
    np.testing.assert_array_equal(b.data, [0.0, 0.0, 1.0, 0.0])
    layer, bottom, top = run('name: "th" type: "Threshold"', [1.0])
    layer.run_backward(top, [False], bottom)  # nothing asked: fine
    with pytest.raises(NetConfigError, match=r"layer 'th' \(Threshold\): Threshold has no gradient"):
        layer.run_backward(top, [True], bottom)


# --- Clip -----------------------------------------------------------------------------
def test_clip_forward_hand_case_and_bounds_pass_gradient():
    layer, bottom, top = run('type: "Clip" clip_param { min: -1 max: 2 }', [-3.0, -1.0, 0.5, 2.0, 5.0])
    np.testing.assert_array_equal(top[0].data, [-1.0, -1.0, 0.5, 2.0, 2.0])
    backward(layer, bottom, top, [np.ones(5)])
    np.testing.assert_array_equal(bottom[0].diff, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_clip_gradient_and_in_place():
    text = 'type: "Clip" clip_param { min: -0.5 max: 0.6 }'
    layer, bottom, top = setup_layer(text, [SHAPE])
    x = bottom[0].data
    for bound in (-0.5, 0.6):  # keep central differences off both kinks
        near = np.abs(x - bound) < 0.02
        x[near] = bound + 0.05
    check_gradient(layer, bottom, top, setup=False)
    assert_in_place_matches(text, SHAPE)  # Caffe's in-place backward would read the clipped y


@pytest.mark.parametrize("body,message", [
    ("min: 1", "clip_param needs both min and max"),
    ("min: 2 max: 1", r"clip_param.min \(2.0\) is greater than max \(1.0\)"),
])
def test_clip_bad_params(body, message):
    with pytest.raises(NetConfigError, match=r"layer 'c' \(Clip\): " + message):
        setup_layer(f'name: "c" type: "Clip" clip_param {{ {body} }}', [SHAPE])


# --- Swish ----------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [1.0, 1.5, -0.7])
def test_swish_forward_gradient_in_place(beta):
    text = f'type: "Swish" swish_param {{ beta: {beta} }}'
    layer, bottom, top = setup_layer(text, [SHAPE])
    bottom[0].data[...] *= 4
    forward(layer, bottom, top)
    x = x64(bottom)
    np.testing.assert_allclose(top[0].data, x / (1 + np.exp(-beta * x)), rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)
    assert_in_place_matches(text, SHAPE)


# --- all of them ----------------------------------------------------------------------
@pytest.mark.parametrize("type_name,v1", [("Power", "POWER"), ("Exp", "EXP"), ("BNLL", "BNLL"),
                                          ("Threshold", "THRESHOLD")])
def test_v1_names(type_name, v1):
    assert LAYERS.get(v1) is LAYERS.get(type_name)


@pytest.mark.parametrize("text", ['type: "ELU"', 'type: "Swish"', 'type: "BNLL"', 'type: "PReLU"',
                                  'type: "Power" power_param { power: 2 }'])
def test_propagate_down_false_leaves_bottom_diff(text):
    layer, bottom, top = setup_layer(text, [SHAPE])
    bottom[0].diff[...] = 42
    forward(layer, bottom, top)
    backward(layer, bottom, top, propagate_down=[False])
    assert np.all(bottom[0].diff == 42)

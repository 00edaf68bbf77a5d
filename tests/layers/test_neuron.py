"""ReLU, Sigmoid, TanH, Dropout: shapes, forward vs float64, gradients, in place."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.rng import set_random_seed
from pycaffe_lite.testing import check_gradient

from .layer_test_template import assert_in_place_matches, backward, forward, setup_layer

GRADIENT_CHECKED = {"ReLU", "Sigmoid", "TanH", "Dropout"}

SHAPE = (2, 3, 4, 5)


def x64(bottom):
    return bottom[0].data.astype(np.float64)


# --- ReLU ----------------------------------------------------------------------------
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_forward(slope):
    layer, bottom, top = setup_layer(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}', [SHAPE])
    assert top[0].shape == SHAPE
    forward(layer, bottom, top)
    x = x64(bottom)
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, slope * x), rtol=1e-6)


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_gradient(slope):
    layer, bottom, top = setup_layer(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}', [SHAPE])
    check_gradient(layer, bottom, top, kink=0.0, kink_range=0.01, setup=False)


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_in_place(slope):
    assert_in_place_matches(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}', SHAPE)


def test_relu_backward_reads_bottom_sign():
    layer, bottom, top = setup_layer('type: "ReLU"', [np.array([-2.0, 0.0, 3.0])])
    forward(layer, bottom, top)
    backward(layer, bottom, top, [np.array([5.0, 5.0, 5.0])])
    np.testing.assert_array_equal(bottom[0].diff, [0.0, 0.0, 5.0])  # x == 0 takes the slope (0)


def test_relu_propagate_down_false_leaves_bottom_diff():
    layer, bottom, top = setup_layer('type: "ReLU"', [SHAPE])
    bottom[0].diff[...] = 42
    forward(layer, bottom, top)
    backward(layer, bottom, top, propagate_down=[False])
    assert np.all(bottom[0].diff == 42)


# --- Sigmoid / TanH ------------------------------------------------------------------
@pytest.mark.parametrize(
    "type_name,reference",
    [("Sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x))), ("TanH", np.tanh)],
)
def test_smooth_forward(type_name, reference):
    layer, bottom, top = setup_layer(f'type: "{type_name}"', [SHAPE])
    bottom[0].data[...] *= 10  # reach the saturated tails too
    assert top[0].shape == SHAPE
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, reference(x64(bottom)), rtol=1e-6, atol=1e-7)


def test_sigmoid_does_not_overflow():
    layer, bottom, top = setup_layer('type: "Sigmoid"', [np.array([-1000.0, 0.0, 1000.0])])
    with np.errstate(all="raise"):
        forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("type_name", ["Sigmoid", "TanH"])
def test_smooth_gradient(type_name):
    layer, bottom, top = setup_layer(f'type: "{type_name}"', [SHAPE])
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize("type_name", ["Sigmoid", "TanH"])
def test_smooth_in_place(type_name):
    assert_in_place_matches(f'type: "{type_name}"', SHAPE)


# --- Dropout -------------------------------------------------------------------------
def test_dropout_train_mask_and_scale():
    set_random_seed(3)
    layer, bottom, top = setup_layer(
        'type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [(50, 40)], seed=1
    )
    bottom[0].data[...] = 1.0
    forward(layer, bottom, top)
    y = top[0].data
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1.0 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.03  # 2000 draws: the std of the mean is ~0.01
    backward(layer, bottom, top, [np.ones(y.shape)])
    np.testing.assert_array_equal(bottom[0].diff, y)  # same mask, same scale


def test_dropout_test_phase_is_identity():
    layer, bottom, top = setup_layer(
        'type: "Dropout" phase: TEST dropout_param { dropout_ratio: 0.5 }', [SHAPE]
    )
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)
    backward(layer, bottom, top, [np.full(SHAPE, 2.0)])
    assert np.all(bottom[0].diff == 2.0)


def test_dropout_seed_repeats_mask():
    layer, bottom, top = setup_layer('type: "Dropout"', [SHAPE])
    set_random_seed(11)
    forward(layer, bottom, top)
    first = top[0].data.copy()
    set_random_seed(11)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, first)
    forward(layer, bottom, top)
    assert not np.array_equal(top[0].data, first)  # a fresh mask every pass


def test_dropout_gradient():
    layer, bottom, top = setup_layer('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', [SHAPE])
    check_gradient(layer, bottom, top, seed=1701, setup=False)


def test_dropout_in_place():
    assert_in_place_matches('type: "Dropout"', SHAPE, before_forward=lambda: set_random_seed(5))
    assert_in_place_matches('type: "Dropout" phase: TEST', SHAPE)


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_dropout_bad_ratio(ratio):
    with pytest.raises(NetConfigError, match="drop7.*dropout_ratio"):
        setup_layer(f'name: "drop7" type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', [(2, 3)])

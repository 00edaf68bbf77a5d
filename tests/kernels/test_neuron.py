"""ReLU kernels against NumPy written from Caffe's formulas (also run with NUMBA_DISABLE_JIT=1)."""
import numpy as np
import pytest

from pycaffe_lite.kernels.neuron import (
    relu_backward,
    relu_backward_inplace,
    relu_forward,
    relu_forward_inplace,
)


def _ref_forward(x, slope):
    x = x.astype(np.float64)
    return np.maximum(x, 0) + slope * np.minimum(x, 0)


def _ref_backward(x, dy, slope):
    return dy.astype(np.float64) * ((x > 0) + slope * (x <= 0))


@pytest.mark.parametrize("size", [1, 7, 1000])
@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5])
def test_relu_forward_and_backward_match_caffe_formulas(size, slope):
    rng = np.random.default_rng(size)
    x = rng.standard_normal(size).astype(np.float32)
    x[::3] = 0.0  # the kink: forward 0, backward takes the slope
    dy = rng.standard_normal(size).astype(np.float32)
    y = np.full(size, np.nan, np.float32)
    relu_forward(x, slope, y)
    np.testing.assert_allclose(y, _ref_forward(x, slope), rtol=1e-6, atol=0)
    dx = np.full(size, np.nan, np.float32)
    relu_backward(x, dy, slope, dx)
    np.testing.assert_allclose(dx, _ref_backward(x, dy, slope), rtol=1e-6, atol=0)
    # the in-place forms give the same bits
    y2 = x.copy()
    relu_forward_inplace(y2, slope)
    np.testing.assert_array_equal(y2, y)
    relu_backward_inplace(x, slope, dy)
    np.testing.assert_array_equal(dy, dx)


def test_relu_in_place_nan_and_signed_zero():
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan], np.float32)
    relu_forward(x, 0.0, x)  # in place
    np.testing.assert_array_equal(x[:4], [0.0, 0.0, 0.0, 3.0])
    assert not np.signbit(x[0]) and np.isnan(x[4])  # exactly +0.0 as max(x, 0) gives; NaN passes
    dy = np.array([1.0, np.nan, 2.0], np.float32)
    dx = np.empty(3, np.float32)
    relu_backward(np.array([-1.0, -1.0, 1.0], np.float32), dy, 0.0, dx)
    np.testing.assert_array_equal(dx[[0, 2]], [0.0, 2.0])
    assert np.isnan(dx[1])  # NaN * 0 stays NaN, as Caffe's product does

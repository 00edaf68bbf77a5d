"""Softmax: shapes, forward vs float64 on several axes, gradients, in place."""

import numpy as np
import pytest

from pycaffe_lite.errors import ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import assert_in_place_matches, forward, setup_layer

GRADIENT_CHECKED = {"Softmax"}


def reference(x, axis):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis,shape", [(1, (2, 5, 3, 2)), (-1, (3, 4)), (0, (6,)), (2, (2, 3, 4))])
def test_forward(axis, shape):
    layer, bottom, top = setup_layer(f'type: "Softmax" softmax_param {{ axis: {axis} }}', [shape])
    bottom[0].data[...] *= 20  # large scores: the max subtraction must keep exp finite
    assert top[0].shape == shape
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, reference(bottom[0].data, axis), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(top[0].data.sum(axis=axis), 1.0, rtol=1e-5)


def test_huge_scores_stay_finite():
    layer, bottom, top = setup_layer('type: "Softmax"', [np.array([[1000.0, 0.0, -1000.0]])])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("axis,shape", [(1, (2, 4, 2)), (-1, (3, 5))])
def test_gradient(axis, shape):
    layer, bottom, top = setup_layer(f'type: "Softmax" softmax_param {{ axis: {axis} }}', [shape])
    check_gradient(layer, bottom, top, setup=False)


def test_in_place():
    assert_in_place_matches('type: "Softmax"', (2, 5, 3))


def test_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"'sm'.*axis 2.*\(4, 3\)"):
        setup_layer('name: "sm" type: "Softmax" softmax_param { axis: 2 }', [(4, 3)])

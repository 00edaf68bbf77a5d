"""Pad: constant borders on the last two axes: shapes, values, gradients, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, setup_layer

GRADIENT_CHECKED = {"Pad"}


@pytest.mark.parametrize("pads, shape, width", [
    ("pad: 2", (2, 1, 28, 28), ((2, 2), (2, 2))),          # MNIST -> LeNet-5's 32x32
    ("pad: [1, 3]", (1, 2, 3, 4), ((1, 1), (3, 3))),
    ("pad: [0, 1, 2, 3]", (3, 4, 5), ((0, 1), (2, 3))),     # any leading axes
    ("pad: 0", (2, 3), ((0, 0), (0, 0))),
])
def test_forward_and_backward(pads, shape, width):
    layer, bottom, top = setup_layer(f'type: "Pad" pad_param {{ {pads} value: -0.1 }}', [shape])
    lead = [(0, 0)] * (len(shape) - 2)
    expected = np.pad(bottom[0].data.astype(np.float64), lead + list(width), constant_values=-0.1)
    assert top[0].shape == expected.shape
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-7)
    dy = np.random.default_rng(1).uniform(-1, 1, expected.shape)
    backward(layer, bottom, top, [dy])
    (t, _), (left, _) = width
    np.testing.assert_allclose(bottom[0].diff, dy[..., t:t + shape[-2], left:left + shape[-1]], rtol=1e-6)


def test_gradient():
    layer, bottom, top = setup_layer('type: "Pad" pad_param { pad: [1, 2, 0, 1] value: 3 }', [(2, 2, 3, 4)])
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize("param, shape, error, message", [
    ("pad_param { pad: [1, 2, 3] }", (1, 1, 2, 2), NetConfigError,
     r"layer 'pad' \(Pad\): pad_param.pad has 3 values; give 1 \(every side\), 2 \(height, width\) or 4"),
    ("", (1, 1, 2, 2), NetConfigError, r"pad_param.pad has 0 values"),
    ("pad_param { pad: 1 }", (5,), ShapeError, r"bottom 'bottom0' has shape \(5,\); Pad needs at least 2 axes"),
])
def test_errors(param, shape, error, message):
    with pytest.raises(error, match=message):
        setup_layer(f'type: "Pad" {param}', [shape])

"""Subsampling (LeNet-5's S2/S4): shapes, forward against float64, gradients, defaults, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, setup_layer

GRADIENT_CHECKED = {"Subsampling"}

FILLERS = 'coeff_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'


def text(extra: str = FILLERS) -> str:
    return f'type: "Subsampling" subsampling_param {{ {extra} }}'


def reference(x, coeff, bias, k, s):
    x = x.astype(np.float64)
    N, C, H, W = x.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    y = np.empty((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = x[:, :, s * i:s * i + k, s * j:s * j + k].sum(axis=(2, 3))
    return y * coeff[None, :, None, None] + bias[None, :, None, None]


@pytest.mark.parametrize("k, s, shape, out", [
    (2, None, (2, 3, 8, 6), (4, 3)),     # LeNet's 2x2, stride 2
    (2, None, (2, 3, 7, 5), (3, 2)),     # odd sizes: the incomplete last window is dropped
    (3, 2, (1, 2, 7, 8), (3, 3)),        # overlapping windows
    (1, 1, (1, 1, 1, 1), (1, 1)),        # size 1
])
def test_forward_matches_reference(k, s, shape, out):
    extra = f"kernel_size: {k} " + (f"stride: {s} " if s else "") + FILLERS
    layer, bottom, top = setup_layer(text(extra), [shape])
    assert top[0].shape == shape[:2] + out
    assert [b.shape for b in layer.blobs] == [(shape[1],), (shape[1],)]
    forward(layer, bottom, top)
    coeff, bias = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, reference(bottom[0].data, coeff, bias, k, s or k), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra", ["", "kernel_size: 3 stride: 2"])
def test_gradient(extra):
    layer, bottom, top = setup_layer(text(f"{extra} {FILLERS}"), [(2, 3, 7, 6)])
    assert check_gradient(layer, bottom, top, setup=False) > 0


def test_default_fillers_average_and_zero_bias():
    layer, bottom, top = setup_layer(text(""), [(1, 2, 4, 4)])
    np.testing.assert_array_equal(layer.blobs[0].data, [0.25, 0.25])
    np.testing.assert_array_equal(layer.blobs[1].data, [0, 0])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, bottom[0].data.reshape(1, 2, 2, 2, 2, 2).mean(axis=(3, 5)), rtol=1e-6)


def test_parameter_gradients_accumulate_and_propagate_down_false():
    layer, bottom, top = setup_layer(text(), [(2, 2, 4, 4)])
    forward(layer, bottom, top)
    bottom[0].diff[...] = 42
    backward(layer, bottom, top, propagate_down=[False])
    assert np.all(bottom[0].diff == 42)
    once = [b.diff.copy() for b in layer.blobs]
    layer.run_backward(top, [False], bottom)
    for b, d in zip(layer.blobs, once):
        np.testing.assert_allclose(b.diff, 2 * d, rtol=1e-6)


@pytest.mark.parametrize("extra, shape, error, message", [
    ("kernel_size: 0", (1, 1, 4, 4), NetConfigError,
     r"layer 'subsampling' \(Subsampling\): kernel_size \(0\) and stride \(0\) must be >= 1"),
    ("stride: 0", (1, 1, 4, 4), NetConfigError, r"kernel_size \(2\) and stride \(0\) must be >= 1"),
    ("", (2, 4, 4), ShapeError, r"bottom 'bottom0' has shape \(2, 4, 4\); Subsampling needs \(N, C, H, W\)"),
    ("kernel_size: 5", (1, 1, 4, 6), ShapeError, r"bottom 'bottom0' \(1, 1, 4, 6\) is smaller than the 5x5 window"),
])
def test_errors(extra, shape, error, message):
    with pytest.raises(error, match=message):
        setup_layer(text(extra), [shape])


def test_channel_change_after_setup_is_refused():
    layer, bottom, top = setup_layer(text(), [(1, 2, 4, 4)])
    bottom[0].reshape(1, 3, 4, 4)
    with pytest.raises(ShapeError, match=r"has shape \(1, 3, 4, 4\) but the layer was set up for \(N, 2, H, W\)"):
        forward(layer, bottom, top)

"""LRN: both regions by hand and against float64 references, gradients, errors."""
import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.testing import check_gradient

from .layer_test_template import forward, make_layer, setup_layer

GRADIENT_CHECKED = {"LRN"}

SHAPE = (2, 7, 3, 4)


def lrn(body: str = "") -> str:
    return f'name: "norm1" type: "LRN" lrn_param {{ {body} }}'


def reference_across(x, size, alpha, beta, k):
    C = x.shape[1]
    half = (size - 1) // 2
    sq = x ** 2
    s = np.stack([sq[:, max(0, c - half):min(C, c + half + 1)].sum(axis=1) for c in range(C)], axis=1)
    return x * (k + alpha / size * s) ** -beta


def reference_within(x, size, alpha, beta):
    half = (size - 1) // 2
    H, W = x.shape[2:]
    sq = np.pad(x ** 2, ((0, 0), (0, 0), (half, half), (half, half)))
    avg = np.zeros_like(x)
    for h in range(H):
        for w in range(W):
            avg[:, :, h, w] = sq[:, :, h:h + size, w:w + size].sum(axis=(2, 3)) / size ** 2  # padding counts
    return x * (1 + alpha * avg) ** -beta


def test_across_channels_by_hand():
    x = np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1)
    layer, bottom, top = setup_layer(lrn("local_size: 3 alpha: 3 beta: 1 k: 1"), [x])
    forward(layer, bottom, top)
    # s = 1 + 3/3 * (sum of squares of the neighbouring channels): 6, 15, 14
    np.testing.assert_allclose(top[0].data.ravel(), [1 / 6, 2 / 15, 3 / 14], rtol=1e-6)


def test_within_channel_by_hand_ignores_k():
    x = np.array([[[[2.0, 0.0], [0.0, 0.0]]]])
    layer, bottom, top = setup_layer(lrn("local_size: 3 alpha: 9 beta: 1 k: 100 norm_region: WITHIN_CHANNEL"), [x])
    forward(layer, bottom, top)
    # every 3x3 window around a pixel of this 2x2 image holds the 4, and divides by 9: s = 1 + 9 * 4/9 = 5
    np.testing.assert_allclose(top[0].data[0, 0], [[0.4, 0.0], [0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1.0, 0.75, 1.0), (3, 2.0, 0.5, 2.0), (1, 0.5, 1.2, 1.0),
                                               (9, 0.0001, 0.75, 1.0)])
def test_across_channels_reference_and_gradient(size, alpha, beta, k):
    layer, bottom, top = setup_layer(lrn(f"local_size: {size} alpha: {alpha} beta: {beta} k: {k}"), [SHAPE])
    bottom[0].data[...] *= 2
    assert top[0].shape == SHAPE
    forward(layer, bottom, top)
    ref = reference_across(bottom[0].data.astype(np.float64), size, alpha, beta, k)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize("size,alpha,beta", [(3, 5.0, 0.75), (5, 2.0, 1.5), (1, 1.0, 0.5)])
def test_within_channel_reference_and_gradient(size, alpha, beta):
    layer, bottom, top = setup_layer(
        lrn(f"local_size: {size} alpha: {alpha} beta: {beta} norm_region: WITHIN_CHANNEL"), [SHAPE])
    bottom[0].data[...] *= 2
    forward(layer, bottom, top)
    ref = reference_within(bottom[0].data.astype(np.float64), size, alpha, beta)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_reshape_follows_the_bottom():
    layer, bottom, top = setup_layer(lrn("norm_region: WITHIN_CHANNEL"), [SHAPE])
    bottom[0].reshape(1, 2, 5, 5)
    bottom[0].data[...] = 1
    forward(layer, bottom, top)
    assert top[0].shape == (1, 2, 5, 5)
    np.testing.assert_allclose(top[0].data[0, 0, 2, 2], (1 + 1.0) ** -0.75, rtol=1e-6)


def test_errors():
    with pytest.raises(NetConfigError, match=r"layer 'norm1' \(LRN\): local_size must be odd, got 4"):
        setup_layer(lrn("local_size: 4"), [SHAPE])
    with pytest.raises(ShapeError, match=r"LRN needs \(N, C, H, W\)"):
        setup_layer(lrn(), [(2, 7)])
    b = Blob(SHAPE)
    with pytest.raises(NetConfigError, match="LRN cannot run in place"):
        make_layer(lrn()).set_up([b], [b])
    assert LAYERS.get("LRN") is type(make_layer(lrn()))

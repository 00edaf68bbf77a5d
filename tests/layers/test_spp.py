"""SPP: Caffe's per-level kernel/pad, output layout, float64 reference, gradients, errors."""
import math

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.layers.spp import spp_level_geometry
from pycaffe_lite.testing import check_gradient

from .layer_test_template import blob_from, forward, setup_layer

GRADIENT_CHECKED = {"SPP"}


def spp(body: str) -> str:
    return f'name: "spp" type: "SPP" spp_param {{ {body} }}'


def distinct(shape, seed=0):
    """Distinct values: the max is unique, so gradient checks never sit on a tie."""
    return np.random.default_rng(seed).permutation(math.prod(shape)).reshape(shape) * 0.1


def pool_reference(x, kh, kw, ph, pw, mode):
    N, C, H, W = x.shape
    OH = -((kh - H - 2 * ph) // kh) + 1
    OW = -((kw - W - 2 * pw) // kw) + 1
    if (ph or pw) and (OH - 1) * kh >= H + ph:
        OH -= 1
    if (ph or pw) and (OW - 1) * kw >= W + pw:
        OW -= 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * kh - ph, j * kw - pw
            h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
            win = x[:, :, max(h0, 0):min(h1, H), max(w0, 0):min(w1, W)]
            y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "MAX" else win.sum(axis=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return y


def reference(x, height, mode):
    H, W = x.shape[2:]
    outs = []
    for level in range(height):
        (kh, ph), (kw, pw) = spp_level_geometry(level, H), spp_level_geometry(level, W)
        outs.append(pool_reference(x, kh, kw, ph, pw, mode))
    if height == 1:
        return outs[0]
    return np.concatenate([o.reshape(x.shape[0], -1) for o in outs], axis=1)


def test_level_geometry_is_caffes():
    # kernel = ceil(size / bins), pad = (kernel * bins - size + 1) // 2
    assert spp_level_geometry(0, 13) == (13, 0)
    assert spp_level_geometry(1, 13) == (7, 1)
    assert spp_level_geometry(2, 13) == (4, 2)
    assert spp_level_geometry(2, 9) == (3, 2)
    assert spp_level_geometry(3, 16) == (2, 0)


def test_hand_case_two_levels():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    layer, bottom, top = setup_layer(spp("pyramid_height: 2"), [x])
    assert top[0].shape == (1, 5)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [[15, 5, 7, 13, 15]])  # the whole plane, then its quadrants


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("height,shape", [(1, (2, 3, 5, 4)), (3, (2, 2, 8, 8)), (3, (1, 2, 7, 9)), (2, (1, 1, 2, 3))])
def test_forward_matches_reference(mode, height, shape):
    layer, bottom, top = setup_layer(spp(f"pyramid_height: {height} pool: {mode}"), [distinct(shape)])
    forward(layer, bottom, top)
    ref = reference(bottom[0].data.astype(np.float64), height, mode)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-6, atol=1e-6)


def test_any_input_size_gives_the_same_length():
    layer, bottom, top = setup_layer(spp("pyramid_height: 3"), [(1, 4, 9, 9)])
    for h, w in [(9, 9), (16, 12), (13, 20)]:
        bottom[0].reshape(1, 4, h, w)
        forward(layer, bottom, top)
        assert top[0].shape == (1, 4 * 21)


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_gradient(mode):
    layer, bottom, top = setup_layer(spp(f"pyramid_height: 3 pool: {mode}"), [distinct((2, 2, 7, 6), 1)])
    assert check_gradient(layer, bottom, top, setup=False) > 0


def test_stochastic_test_phase_and_gradient():
    x = blob_from(np.random.default_rng(2).uniform(0.1, 1.0, (1, 2, 6, 6)))
    layer, bottom, top = setup_layer('phase: TEST ' + spp("pyramid_height: 2 pool: STOCHASTIC"), [x])
    forward(layer, bottom, top)
    plane = x.data[0, 0].astype(np.float64)
    assert top[0].data[0, 0] == pytest.approx((plane ** 2).sum() / plane.sum(), rel=1e-5)
    check_gradient(layer, bottom, top, setup=False)


def test_errors():
    with pytest.raises(ShapeError, match=r"layer 'spp' \(SPP\): input 'bottom0' \(1, 1, 5, 5\) is too small for "
                                         r"pyramid level 2 \(4x4 bins\): kernel 2x2 with pad 2x2"):
        setup_layer(spp("pyramid_height: 3"), [(1, 1, 5, 5)])
    with pytest.raises(NetConfigError, match="pyramid_height must be given and >= 1"):
        setup_layer(spp(""), [(1, 1, 5, 5)])
    with pytest.raises(ShapeError, match=r"SPP needs \(N, C, H, W\)"):
        setup_layer(spp("pyramid_height: 1"), [(1, 5)])

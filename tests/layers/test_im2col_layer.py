"""Im2col layer: top layout (N, C*kh*kw, OH, OW), hand case, float64 reference, gradient, errors."""
import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, setup_layer

GRADIENT_CHECKED = {"Im2col"}


def im2col(text: str) -> str:
    return f'name: "cols" type: "Im2col" convolution_param {{ {text} }}'


def reference(x, k, s, p, d):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k, s, p, d
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((N, C * kh * kw, OH, OW))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                y[:, (c * kh + i) * kw + j] = xp[:, c, i * dh:i * dh + sh * (OH - 1) + 1:sh,
                                                 j * dw:j * dw + sw * (OW - 1) + 1:sw]
    return y


def test_hand_case():
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    layer, bottom, top = setup_layer(im2col("kernel_size: 2"), [x])
    assert top[0].shape == (1, 4, 2, 2)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data[0], [[[0, 1], [3, 4]], [[1, 2], [4, 5]],
                                                   [[3, 4], [6, 7]], [[4, 5], [7, 8]]])
    backward(layer, bottom, top, [np.ones((1, 4, 2, 2))])
    # each pixel gets one per window it appears in
    np.testing.assert_array_equal(bottom[0].diff[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


@pytest.mark.parametrize("text,shape,k,s,p,d", [
    ("kernel_size: 3", (2, 3, 5, 4), (3, 3), (1, 1), (0, 0), (1, 1)),
    ("kernel_h: 2 kernel_w: 3 stride: 2 pad: 1", (2, 2, 5, 6), (2, 3), (2, 2), (1, 1), (1, 1)),
    ("kernel_size: 2 dilation: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 2", (1, 2, 4, 5), (2, 2), (1, 2), (1, 2),
     (2, 2)),
    ("kernel_size: 1", (1, 1, 1, 1), (1, 1), (1, 1), (0, 0), (1, 1)),
])
def test_forward_matches_reference_and_gradient(text, shape, k, s, p, d):
    layer, bottom, top = setup_layer(im2col(text), [shape])
    forward(layer, bottom, top)
    ref = reference(bottom[0].data.astype(np.float64), k, s, p, d)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)
    assert check_gradient(layer, bottom, top, setup=False) > 0


def test_errors():
    with pytest.raises(ShapeError, match=r"layer 'cols' \(Im2col\): input 'bottom0' \(1, 1, 2, 2\) is too small"):
        setup_layer(im2col("kernel_size: 3"), [(1, 1, 2, 2)])
    with pytest.raises(NetConfigError, match=r"layer 'cols' \(Im2col\): kernel_size .* must be given"):
        setup_layer(im2col("stride: 1"), [(1, 1, 2, 2)])
    with pytest.raises(NetConfigError, match="dilation has 3 values"):
        setup_layer(im2col("kernel_size: 1 dilation: 1 dilation: 1 dilation: 1"), [(1, 1, 2, 2)])
    with pytest.raises(ShapeError, match=r"Im2col needs \(N, C, H, W\)"):
        setup_layer(im2col("kernel_size: 1"), [(2, 2)])
    assert LAYERS.get("IM2COL") is LAYERS.get("Im2col")

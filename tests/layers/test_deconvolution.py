"""Deconvolution: Caffe's output size and blob layout, overlaps by hand, float64 reference,
adjoint of Convolution, bilinear upsampling, gradients, errors."""
import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.registry import LAYERS
from pycaffe_lite.testing import check_gradient

from .layer_test_template import forward, make_layer, random_blob, setup_layer

GRADIENT_CHECKED = {"Deconvolution"}

FILLERS = ' weight_filler { type: "gaussian" } bias_filler { type: "gaussian" }'


def deconv(text: str) -> str:
    return f'name: "up" type: "Deconvolution" convolution_param {{ {text} }}'


def reference(x, w, b, stride, pad, dil, group):
    """Scatter every input pixel times its kernel into the (uncropped) output, then crop the pad."""
    N, C, H, W = x.shape
    _, Og, kh, kw = w.shape
    sh, sw = stride
    ph, pw = pad
    dh, dw = dil
    full = np.zeros((N, Og * group, sh * (H - 1) + dh * (kh - 1) + 1, sw * (W - 1) + dw * (kw - 1) + 1))
    Cg = C // group
    for c in range(C):
        g = c // Cg
        for h in range(H):
            for v in range(W):
                for i in range(kh):
                    for j in range(kw):
                        full[:, g * Og:(g + 1) * Og, h * sh + i * dh, v * sw + j * dw] += x[:, c, h, v, None] * w[c, :, i, j]
    y = full[:, :, ph:full.shape[2] - ph, pw:full.shape[3] - pw]
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def test_overlapping_windows_by_hand():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    text = 'num_output: 1 kernel_size: 3 stride: 2 bias_term: false weight_filler { type: "constant" value: 1 }'
    layer, bottom, top = setup_layer(deconv(text), [x])
    assert top[0].shape == (1, 1, 5, 5)  # 2 * (2 - 1) + 3 - 0
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[1, 1, 3, 2, 2],
                                                      [1, 1, 3, 2, 2],
                                                      [4, 4, 10, 6, 6],
                                                      [3, 3, 7, 4, 4],
                                                      [3, 3, 7, 4, 4]])
    layer, bottom, top = setup_layer(deconv(text + " pad: 1"), [x])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[1, 3, 2], [4, 10, 6], [3, 7, 4]])


@pytest.mark.parametrize(
    "text,shape,stride,pad,dil,group",
    [
        ("num_output: 4 kernel_size: 3", (2, 3, 4, 5), (1, 1), (0, 0), (1, 1), 1),
        ("num_output: 2 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1", (2, 2, 3, 4), (2, 2), (1, 1), (1, 1), 1),
        ("num_output: 6 kernel_size: 3 dilation: 2 pad_h: 2 pad_w: 1 stride_h: 3 stride_w: 2 group: 2",
         (1, 4, 3, 4), (3, 2), (2, 1), (2, 2), 2),
        ("num_output: 1 kernel_size: 1 bias_term: false", (1, 1, 1, 1), (1, 1), (0, 0), (1, 1), 1),
        ("num_output: 3 kernel_size: 4 stride: 2 pad: 1 group: 3", (2, 3, 3, 3), (2, 2), (1, 1), (1, 1), 3),
    ],
)
def test_forward_matches_reference(text, shape, stride, pad, dil, group):
    layer, bottom, top = setup_layer(deconv(text + FILLERS), [shape])
    C = shape[1]
    num_output = int(text.split("num_output: ")[1].split()[0])
    assert layer.blobs[0].shape[:2] == (C, num_output // group)  # Caffe's (C_in, C_out / group, kh, kw)
    forward(layer, bottom, top)
    b = layer.blobs[1].data.astype(np.float64) if len(layer.blobs) > 1 else None
    ref = reference(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64), b,
                    stride, pad, dil, group)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-4, atol=1e-5)


def test_is_the_adjoint_of_convolution_with_the_same_blob():
    geometry = "kernel_size: 3 stride: 2 pad: 1 group: 2 bias_term: false"
    conv, xb, yb = setup_layer(f'type: "Convolution" convolution_param {{ num_output: 6 {geometry} '
                               'weight_filler { type: "gaussian" } }', [(2, 4, 7, 7)])
    forward(conv, xb, yb)
    up, zb, wb = setup_layer(deconv(f"num_output: 4 {geometry}"), [yb[0].shape], seed=5)
    up.blobs[0].data[...] = conv.blobs[0].data  # (6, 2, 3, 3) in both layouts
    forward(up, zb, wb)
    assert wb[0].shape == xb[0].shape
    lhs = np.vdot(yb[0].data.astype(np.float64), zb[0].data)
    rhs = np.vdot(xb[0].data.astype(np.float64), wb[0].data)
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_bilinear_group_upsampling_keeps_a_linear_ramp():
    # FCN's 2x upsampling: kernel 2f, stride f, pad f/2, one bilinear kernel per channel
    text = 'num_output: 2 kernel_size: 4 stride: 2 pad: 1 group: 2 bias_term: false weight_filler { type: "bilinear" }'
    ramp = np.arange(6.0)[None, None, None, :] + np.zeros((1, 2, 6, 6))
    ramp[:, 1] *= -2
    layer, bottom, top = setup_layer(deconv(text), [ramp])
    assert layer.blobs[0].shape == (2, 1, 4, 4) and top[0].shape == (1, 2, 12, 12)
    forward(layer, bottom, top)
    inner = top[0].data[0, :, 1:-1, 1:-1]
    # the interior interpolates: x at output column u is (u - 0.5) / 2
    cols = (np.arange(1, 11) - 0.5) / 2
    np.testing.assert_allclose(inner[0], np.broadcast_to(cols, (10, 10)), atol=1e-6)
    np.testing.assert_allclose(inner[1], -2 * np.broadcast_to(cols, (10, 10)), atol=1e-5)


@pytest.mark.parametrize(
    "text,shape",
    [
        ("num_output: 3 kernel_size: 3 stride: 2 pad: 1", (2, 2, 3, 3)),
        ("num_output: 4 kernel_size: 2 dilation: 2 group: 2", (2, 4, 3, 2)),
        ("num_output: 2 kernel_h: 1 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1", (1, 3, 2, 3)),
    ],
)
def test_gradient(text, shape):
    layer, bottom, top = setup_layer(deconv(text + FILLERS.replace('"gaussian" }', '"gaussian" std: 0.5 }', 1)),
                                     [shape], seed=3)
    assert check_gradient(layer, bottom, top, setup=False) > 0


def test_two_bottoms_share_weights_and_accumulate():
    layer = make_layer(deconv("num_output: 2 kernel_size: 2 stride: 2" + FILLERS))
    bottoms = [random_blob((1, 2, 2, 2), seed=1), random_blob((1, 2, 2, 2), seed=2)]
    assert check_gradient(layer, bottoms, [Blob(), Blob()]) > 0


def test_loads_blobs_in_caffes_layout():
    stored = make_layer(deconv("num_output: 4 kernel_size: 2") + " blobs { shape { dim: 2 dim: 4 dim: 2 dim: 2 } "
                        + "data: 0.5 " * 32 + "} blobs { shape { dim: 4 } data: 1 data: 2 data: 3 data: 4 }")
    x, top = Blob((1, 2, 3, 3)), Blob()
    x.data[...] = 1
    stored.set_up([x], [top])
    stored.run_forward([x], [top])
    assert top.shape == (1, 4, 4, 4)
    # corner pixel: one input pixel per channel, weight 0.5, two channels, plus the bias
    np.testing.assert_array_equal(top.data[0, :, 0, 0], [2.0, 3.0, 4.0, 5.0])


def test_errors():
    with pytest.raises(ShapeError, match=r"layer 'up' \(Deconvolution\).*empty output 0x0.*reduce the pad"):
        setup_layer(deconv("num_output: 1 kernel_size: 2 pad: 1"), [(1, 1, 1, 1)])
    with pytest.raises(NetConfigError, match="group 2 must divide both the input channels"):
        setup_layer(deconv("num_output: 3 kernel_size: 2 group: 2"), [(1, 2, 3, 3)])
    with pytest.raises(NetConfigError, match="num_output must be given"):
        setup_layer(deconv("kernel_size: 2"), [(1, 2, 3, 3)])
    with pytest.raises(NetConfigError, match="kernel_size .* must be given"):
        setup_layer(deconv("num_output: 2"), [(1, 2, 3, 3)])
    with pytest.raises(ShapeError, match=r"needs \(N, C, H, W\)"):
        setup_layer(deconv("num_output: 2 kernel_size: 1"), [(2, 3)])
    with pytest.raises(NetConfigError, match="give either stride or stride_h/stride_w"):
        setup_layer(deconv("num_output: 2 kernel_size: 1 stride: 2 stride_h: 1 stride_w: 1"), [(1, 2, 3, 3)])
    layer, bottom, top = setup_layer(deconv("num_output: 2 kernel_size: 1"), [(1, 2, 3, 3)])
    bottom[0].reshape(1, 3, 3, 3)
    with pytest.raises(ShapeError, match=r"set up for \(N, 2, H, W\)"):
        forward(layer, bottom, top)
    assert LAYERS.get("DECONVOLUTION") is type(layer)


def test_refuses_the_connection_table():
    with pytest.raises(NetConfigError, match=r"layer 'up' \(Deconvolution\): convolution_param.connection "
                       r"\(2 pairs\) is a Convolution-only extension.*remove it, or use group"):
        setup_layer(deconv("num_output: 2 kernel_size: 1 connection: [0, 0, 1, 1]"), [(1, 2, 3, 3)])

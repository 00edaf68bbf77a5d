"""Small weight-gradient kernel: against float64 and np.matmul, and the Convolution layer's
backward with it against the BLAS path (groups, stride, pad, dilation, split batch)."""
import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.kernels.conv_wgrad import (
    SHIFT_TILE,
    TILE,
    shift_offsets,
    wgrad_accumulate,
    wgrad_shifted_accumulate,
)
from pycaffe_lite.layers import convolution
from pycaffe_lite.testing import check_gradient
from tests.layers.test_convolution import blob, make
from tests.layers.test_convolution_split import _run

GRADIENT_CHECKED = {"Convolution"}


@pytest.mark.parametrize("O,K,L", [
    (20, 25, 3 * TILE + 77),  # LeNet conv1's output, a partial last tile
    (3, 7, 5),                # odd channels, K not a multiple of 4, L inside one tile
    (1, 1, 1),
    (2, 4, TILE),
    (5, 75, 2 * TILE),
])
def test_accumulates_the_product(O, K, L):
    rng = np.random.default_rng(O * 1000 + K)
    d = rng.standard_normal((O, L), dtype=np.float32)
    col = rng.standard_normal((K, L), dtype=np.float32)
    start = rng.standard_normal((O, K), dtype=np.float32)
    out = start.copy()
    wgrad_accumulate(d, col, out)
    exact = start + d.astype(np.float64) @ col.T.astype(np.float64)
    blas = start + np.matmul(d, col.T)
    scale = np.sqrt(L) * 4  # float32 rounding of a length-L dot product of unit normals
    np.testing.assert_allclose(out, exact, rtol=0, atol=scale * 2e-7 * 8)
    assert np.abs(out - exact).max() <= max(2 * np.abs(blas - exact).max(), 1e-5)


def test_row_slices_of_larger_arrays():
    """The layer passes each group's rows: slices of its scratch and accumulator."""
    rng = np.random.default_rng(1)
    d = rng.standard_normal((6, 600), dtype=np.float32)
    col = rng.standard_normal((10, 600), dtype=np.float32)
    acc = np.zeros((6, 5), np.float32)
    for g in range(2):
        wgrad_accumulate(d[3 * g:3 * g + 3], col[5 * g:5 * g + 5], acc[3 * g:3 * g + 3])
    ref = np.concatenate([d[:3] @ col[:5].T, d[3:] @ col[5:].T])
    np.testing.assert_allclose(acc, ref, rtol=1e-5, atol=1e-4)


COLUMNS = [
    pytest.param("convolution_param { num_output: 4 kernel_size: 3 }", (5, 3, 6, 5), id="plain"),
    pytest.param("convolution_param { num_output: 5 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 }", (7, 6, 7, 5),
                 id="stride-pad-odd-output"),
    pytest.param("convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad_h: 2 pad_w: 1 stride_h: 1 "
                 "stride_w: 2 group: 2 }", (4, 4, 7, 8), id="groups-dilation"),
    pytest.param("convolution_param { num_output: 20 kernel_size: 5 }", (3, 1, 28, 28), id="lenet-conv1"),
]


@pytest.mark.parametrize("split", [False, True], ids=["one-thread", "split"])
@pytest.mark.parametrize("text,shape", COLUMNS)
def test_layer_backward_equals_the_blas_path(monkeypatch, text, shape, split):
    calls = []

    def counted(d, col, out):
        calls.append(out.shape)
        wgrad_accumulate(d, col, out)

    monkeypatch.setattr(convolution, "wgrad_accumulate", counted)
    monkeypatch.setattr(convolution, "SHIFTED_WGRAD_MAX_K", 0)  # the columns kernel, tested here
    monkeypatch.setattr(convolution, "WGRAD_KERNEL_MAX", 0)
    _, blas = _run(text, shape, 1 << 30, split, monkeypatch)
    assert not calls
    monkeypatch.setattr(convolution, "WGRAD_KERNEL_MAX", 1024)
    layer, kernel = _run(text, shape, 1 << 30, split, monkeypatch)
    assert not layer.nhwc and calls  # the columns path, through the kernel
    for a, b in zip(kernel, blas):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    assert not np.allclose(kernel[-2], 0.25)  # the weight gradient did arrive


def test_large_outputs_stay_on_blas(monkeypatch):
    """CIFAR-10 quick's conv1 (32 x 75 outputs) measured faster with BLAS."""
    calls = []
    monkeypatch.setattr(convolution, "wgrad_accumulate", lambda *a: calls.append(1))
    _run("convolution_param { num_output: 32 kernel_size: 5 pad: 2 }", (2, 3, 8, 8), 1 << 30, False, monkeypatch)
    assert not calls


def test_gradient_through_the_kernel(monkeypatch):
    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", 1 << 30)
    layer = make("convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 group: 1 "
                 "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' } }")
    x, top = blob((2, 2, 5, 5), 3), Blob()
    assert check_gradient(layer, [x], [top]) > 0
    assert not layer.nhwc


def _shifted_reference(dy, x, dh, dw):
    """dW[f, c, ky, kx] = sum dy[n, f, oy, ox] x[n, c, oy + ky*dh, ox + kx*dw] in float64 (stride 1)."""
    _, O, OH, OW = dy.shape
    C, H, W = x.shape[1:]
    kh, kw = (H - OH) // dh + 1, (W - OW) // dw + 1
    out = np.zeros((O, C, kh, kw))
    for ky in range(kh):
        for kx in range(kw):
            patch = x[:, :, ky * dh:ky * dh + OH, kx * dw:kx * dw + OW].astype(np.float64)
            out[:, :, ky, kx] = np.einsum("nfij,ncij->fc", dy.astype(np.float64), patch)
    return out.reshape(O, -1)


@pytest.mark.parametrize("n,O,C,H,W,dh,dw", [
    (3, 20, 1, 28, 28, 1, 1),   # LeNet conv1's shape (5x5 kernel)
    (2, 3, 2, 7, 9, 1, 1),      # odd channels, K = 2*3*5 not a multiple of 4
    (2, 1, 1, 5, 4, 2, 1),      # dilation 2 down, one output channel
    (1, 4, 3, 6, 11, 1, 3),     # dilation 3 across
    (1, 2, 1, 70, 80, 1, 1),    # L beyond one SHIFT_TILE
])
def test_shifted_accumulates_the_weight_gradient(n, O, C, H, W, dh, dw):
    rng = np.random.default_rng(n * 100 + O + H)
    kh, kw = (5, 5) if H == 28 else ((3, 5) if (C, H) == (2, 7) else (2, 3))
    OH, OW = H - dh * (kh - 1), W - dw * (kw - 1)
    x = rng.standard_normal((n, C, H, W), dtype=np.float32)
    dy = rng.standard_normal((n, O, OH, OW), dtype=np.float32)
    start = rng.standard_normal((O, C * kh * kw), dtype=np.float32)
    out = start.copy()
    wide = np.full((O, OH * W), np.nan, np.float32)  # whatever the scratch held before
    wgrad_shifted_accumulate(dy, x.reshape(n, -1), shift_offsets(C, H, W, kh, kw, dh, dw), wide, out)
    exact = start + _shifted_reference(dy, x, dh, dw)
    scale = np.sqrt(n * OH * OW) * 4
    np.testing.assert_allclose(out, exact, rtol=0, atol=scale * 2e-7 * 8)
    if H == 70:
        assert (OH - 1) * W + OW > SHIFT_TILE


SHIFTED = [
    pytest.param("convolution_param { num_output: 20 kernel_size: 5 }", (5, 1, 28, 28), id="lenet-conv1"),
    pytest.param("convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 dilation: 2 }", (3, 2, 9, 7),
                 id="dilation-odd"),
]


@pytest.mark.parametrize("split", [False, True], ids=["one-thread", "split"])
@pytest.mark.parametrize("text,shape", SHIFTED)
def test_layer_shifted_backward_equals_the_columns_path(monkeypatch, text, shape, split):
    calls = []

    def counted(*args):
        calls.append(1)
        wgrad_shifted_accumulate(*args)

    monkeypatch.setattr(convolution, "wgrad_shifted_accumulate", counted)
    monkeypatch.setattr(convolution, "SHIFTED_WGRAD_MAX_K", 0)
    _, columns = _run(text, shape, 1 << 30, split, monkeypatch)
    assert not calls
    monkeypatch.setattr(convolution, "SHIFTED_WGRAD_MAX_K", 32)
    layer, shifted = _run(text, shape, 1 << 30, split, monkeypatch)
    assert layer.shifted and calls
    for a, b in zip(shifted, columns):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    assert not np.allclose(shifted[-2], 0.25)  # the weight gradient did arrive


@pytest.mark.parametrize("text", [
    "convolution_param { num_output: 20 kernel_size: 5 stride: 2 }",
    "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }",
    "convolution_param { num_output: 4 kernel_size: 3 group: 2 }",
    "convolution_param { num_output: 4 kernel_size: 7 }",  # K = 2*49 > 32
])
def test_shifted_only_for_small_stride1_unpadded_patches(monkeypatch, text):
    calls = []
    monkeypatch.setattr(convolution, "wgrad_shifted_accumulate", lambda *a: calls.append(1))
    layer, _ = _run(text, (2, 2, 9, 9), 1 << 30, False, monkeypatch)
    assert not layer.shifted and not calls


def test_gradient_through_the_shifted_kernel(monkeypatch):
    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", 1 << 30)
    layer = make("convolution_param { num_output: 3 kernel_size: 2 dilation: 2 "
                 "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' } }")
    x, top = blob((2, 2, 6, 5), 3), Blob()
    assert check_gradient(layer, [x], [top]) > 0
    assert layer.shifted

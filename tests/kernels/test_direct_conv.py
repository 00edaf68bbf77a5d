"""Direct convolution kernels against float64 references: forward, weight gradient, input
gradient (the forward kernel over the padded top diff with rotated filters), the padding copy."""
import numpy as np
import pytest

from pycaffe_lite.kernels.direct_conv import (
    OBLOCK,
    SLACK,
    TILE,
    conv_forward_direct,
    conv_wgrad_direct,
    pad_nhwc,
    pad_nhwc_sum,
    wgrad_blocks,
)


def _pack(W):
    """(O, C, kh, kw) -> (ceil(O/32), kh, kw*C, 32), zero past O."""
    O, C, kh, kw = W.shape
    nb = -(-O // OBLOCK)
    w = np.zeros((nb * OBLOCK, kh, kw, C), np.float32)
    w[:O] = W.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(w.reshape(nb, OBLOCK, kh, kw * C).transpose(0, 2, 3, 1)).reshape(-1)


def _correlate(xpad, W):
    """float64 y[n, o, i, j] = sum xpad[n, c, i + di, j + dj] W[o, c, di, dj]."""
    _, _, kh, kw = W.shape
    OH, OW = xpad.shape[2] - kh + 1, xpad.shape[3] - kw + 1
    y = np.zeros((xpad.shape[0], W.shape[0], OH, OW))
    for di in range(kh):
        for dj in range(kw):
            y += np.einsum("nchw,oc->nohw", xpad[:, :, di:di + OH, dj:dj + OW], W[:, :, di, dj].astype(np.float64))
    return y


def _padded(x, ph, pw, cs, extra_images=0):
    """pad_nhwc into a buffer with room for more images and the slack, filled with garbage first."""
    n, _, H, W = x.shape
    size = (n + extra_images) * (H + 2 * ph) * (W + 2 * pw) * cs + SLACK
    buf = np.full(size, np.nan if extra_images else 7.0, np.float32)
    buf[-SLACK:] = 0
    pad_nhwc(x, ph, pw, cs, buf)
    return buf


def test_pad_nhwc_is_the_channels_last_zero_padded_image():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)
    buf = _padded(x, 1, 2, 4, extra_images=1)
    got = buf[:2 * 6 * 9 * 4].reshape(2, 6, 9, 4)
    want = np.zeros((2, 6, 9, 4), np.float32)
    want[:, 1:5, 2:7, :3] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(buf[2 * 6 * 9 * 4])  # nothing written past the images


@pytest.mark.parametrize("n,C,H,W,ph,pw,cs", [
    (2, 32, 16, 16, 2, 2, 32),  # 16 x 16 blocks, one per image row
    (3, 20, 8, 8, 2, 1, 32),    # blocks over two rows; 4 channels and the channel pad element by element
    (1, 48, 3, 32, 0, 0, 64),   # two blocks per row, no pad
    (2, 16, 5, 8, 1, 2, 16),    # 40 pixels: the last block overlaps
    (2, 17, 4, 12, 1, 1, 17),   # rows of 12: element by element
])
def test_pad_nhwc_transposed_blocks(n, C, H, W, ph, pw, cs):
    x = np.random.default_rng(C).normal(size=(n, C, H, W)).astype(np.float32)
    buf = _padded(x, ph, pw, cs, extra_images=1)
    got = buf[:n * (H + 2 * ph) * (W + 2 * pw) * cs].reshape(n, H + 2 * ph, W + 2 * pw, cs)
    want = np.zeros_like(got)
    want[:, ph:ph + H, pw:pw + W, :C] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(buf[got.size])


@pytest.mark.parametrize("n,C,H,W", [(2, 32, 8, 8), (2, 48, 5, 8), (1, 20, 16, 16), (3, 3, 4, 5)])
def test_pad_nhwc_sum_also_adds_the_channel_sums(n, C, H, W):
    x = np.random.default_rng(C).normal(size=(n, C, H, W)).astype(np.float32)
    sums = np.full(C, 2.0, np.float32)
    buf = np.zeros(n * (H + 2) * (W + 2) * C + SLACK, np.float32)
    pad_nhwc_sum(x, 1, 1, C, buf, sums, np.full(16 * C, np.nan, np.float32))
    np.testing.assert_allclose(sums, 2.0 + x.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)
    want = np.zeros((n, H + 2, W + 2, C), np.float32)
    want[:, 1:-1, 1:-1] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(buf[:want.size].reshape(want.shape), want)


# (n, C, H, W, O, k, pad): channels 1/3/32, outputs not a multiple of 32, rows not a multiple of 8
SHAPES = [(2, 3, 8, 8, 32, 3, 1), (3, 32, 16, 16, 32, 5, 2), (2, 32, 8, 8, 64, 5, 2), (2, 1, 28, 28, 20, 5, 0),
          (3, 20, 12, 12, 50, 5, 0), (2, 7, 9, 11, 33, 3, 2), (2, 5, 8, 9, 128, 3, 1)]


@pytest.mark.parametrize("n,C,H,W,O,k,p", SHAPES)
def test_forward_matches_float64(n, C, H, W, O, k, p):
    rng = np.random.default_rng(n + C + O)
    x = rng.normal(size=(n, C, H, W)).astype(np.float32)
    Wt = rng.normal(size=(O, C, k, k)).astype(np.float32)
    bias = rng.normal(size=O).astype(np.float32)
    Hp, Wp = H + 2 * p, W + 2 * p
    y = np.full((n, O, Hp - k + 1, Wp - k + 1), np.nan, np.float32)
    conv_forward_direct(_padded(x, p, p, C, 1), n, Hp, Wp, C, _pack(Wt), k, k, bias, y)
    want = _correlate(np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))), Wt) + bias[None, :, None, None]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("n,C,H,W,O,k,p", SHAPES)
def test_weight_gradient_accumulates_the_correlation_of_input_and_top_diff(n, C, H, W, O, k, p):
    rng = np.random.default_rng(n * C + O)
    x = rng.normal(size=(n, C, H, W)).astype(np.float32)
    Hp, Wp = H + 2 * p, W + 2 * p
    OH, OW = Hp - k + 1, Wp - k + 1
    dy = rng.normal(size=(n, O, OH, OW)).astype(np.float32)
    Oc = -(-O // OBLOCK) * OBLOCK
    q = max(k - 1 - p, 0)
    dyp = _padded(dy, q, q, Oc, extra_images=2)  # a buffer larger than the chunk, as the layer's
    B, T, R = wgrad_blocks(Oc, k * C)
    assert (B, T) == ((64, 6) if Oc % 64 == 0 else (OBLOCK, TILE)) and R % T == 0 and R >= k * C
    acc = np.full((Oc // B, k, R, B), 0.5, np.float32)
    conv_wgrad_direct(_padded(x, p, p, C, 1), n, Hp, Wp, C, dyp, Oc, OH + 2 * q, OW + 2 * q, q, q, OH, OW, k, k,
                      acc.reshape(-1))
    got = acc[:, :, :k * C].reshape(-1, k, k, C, B).transpose(0, 4, 3, 1, 2).reshape(Oc, C, k, k)
    xpad = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    want = np.zeros((Oc, C, k, k))
    for di in range(k):
        for dj in range(k):
            want[:O, :, di, dj] = np.einsum("nohw,nchw->oc", dy, xpad[:, :, di:di + OH, dj:dj + OW])
    np.testing.assert_allclose(got, want + 0.5, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("n,C,H,W,O,k,p", [s for s in SHAPES if s[6] < s[5]])
def test_input_gradient_is_the_forward_over_the_padded_top_diff(n, C, H, W, O, k, p):
    rng = np.random.default_rng(O)
    Wt = rng.normal(size=(O, C, k, k)).astype(np.float32)
    OH, OW = H + 2 * p - k + 1, W + 2 * p - k + 1
    dy = rng.normal(size=(n, O, OH, OW)).astype(np.float32)
    q = k - 1 - p
    rotated = np.ascontiguousarray(Wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, O, kh, kw)
    dx = np.empty((n, C, H, W), np.float32)
    conv_forward_direct(_padded(dy, q, q, O), n, OH + 2 * q, OW + 2 * q, O, _pack(rotated), k, k,
                        np.zeros(C, np.float32), dx)
    full = np.zeros((n, C, H + 2 * p, W + 2 * p))
    for di in range(k):
        for dj in range(k):
            full[:, :, di:di + OH, dj:dj + OW] += np.einsum("nohw,oc->nchw", dy, Wt[:, :, di, dj].astype(np.float64))
    want = full[:, :, p:p + H, p:p + W]
    np.testing.assert_allclose(dx, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_take_next_hands_out_each_chunk_once_across_threads():
    import threading

    from pycaffe_lite.kernels.direct_conv import take_next

    counter = np.zeros(1, np.int64)
    got = [[], []]

    def worker(k):
        while True:
            v = take_next(counter)
            if v >= 20000:
                return
            got[k].append(v)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[0] + got[1]) == list(range(20000))

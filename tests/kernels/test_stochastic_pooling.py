"""STOCHASTIC pooling kernels against plain NumPy loop references written from Caffe's rules.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels): keep shapes small.
"""
import numpy as np
import pytest

from pycaffe_lite.kernels.pooling import make_pool_geom, max_pool_backward
from pycaffe_lite.kernels.stochastic_pooling import (
    sto_pool_forward_test,
    sto_pool_forward_train,
    sto_pool_test_backward,
)

# (N, C, H, W, kh, kw, sh, sw, ph, pw)
CASES = {
    "random": (2, 3, 9, 8, 3, 2, 2, 1, 0, 0),
    "overlapping": (1, 2, 6, 7, 3, 3, 1, 1, 0, 0),
    "odd_padded": (2, 2, 7, 5, 3, 3, 2, 2, 1, 1),  # windows ignore the pad; the last one is clipped
    "empty_window": (1, 1, 3, 3, 3, 3, 3, 3, 2, 2),  # the second window starts at 3, past the image
    "global": (2, 3, 5, 4, 5, 4, 1, 1, 0, 0),
    "size1": (1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
}


def _setup(case, seed=0):
    N, C, H, W, kh, kw, sh, sw, ph, pw = CASES[case]
    geom = make_pool_geom(H, W, kh, kw, sh, sw, ph, pw)
    rs = np.random.default_rng(seed)
    x = rs.uniform(0.0, 1.0, (N, C, H, W)).astype(np.float32)
    top_shape = (N, C, int(geom[8]), int(geom[9]))
    return x, geom, top_shape, rs


def _windows(geom):
    H, W, kh, kw, sh, sw, _, _, OH, OW = (int(v) for v in geom)
    for oh in range(OH):
        for ow in range(OW):
            yield oh, ow, oh * sh, min(oh * sh + kh, H), ow * sw, min(ow * sw + kw, W)


def ref_train(x, geom, u):
    W = int(geom[1])
    y = np.zeros(u.shape, np.float32)
    idx = np.full(u.shape, -1, np.int32)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oh, ow, h0, h1, w0, w1 in _windows(geom):
                win = x[n, c, h0:h1, w0:w1].ravel()  # row-major, as the kernel scans
                if win.size == 0:
                    continue
                total = np.float32(0)
                for v in win:
                    total = np.float32(total + v)
                thres = np.float32(u[n, c, oh, ow] * total)
                running = np.float32(0)
                for k, v in enumerate(win):
                    running = np.float32(running + v)
                    if running >= thres:
                        y[n, c, oh, ow] = v
                        idx[n, c, oh, ow] = (h0 + k // (w1 - w0)) * W + w0 + k % (w1 - w0)
                        break
    return y, idx


def ref_test(x, geom, top_shape):
    y = np.zeros(top_shape)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oh, ow, h0, h1, w0, w1 in _windows(geom):
                win = x[n, c, h0:h1, w0:w1].astype(np.float64)
                y[n, c, oh, ow] = (win ** 2).sum() / win.sum() if win.sum() > 0 else 0.0
    return y


def ref_test_backward(x, top_diff, geom):
    dx = np.zeros(x.shape)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oh, ow, h0, h1, w0, w1 in _windows(geom):
                win = x[n, c, h0:h1, w0:w1].astype(np.float64)
                s, q = win.sum(), (win ** 2).sum()
                if s > 0:
                    dx[n, c, h0:h1, w0:w1] += top_diff[n, c, oh, ow] * (2 * win * s - q) / s ** 2
    return dx


@pytest.mark.parametrize("case", CASES)
def test_train_forward_and_backward(case):
    x, geom, top_shape, rs = _setup(case)
    u = rs.uniform(0, 1, top_shape).astype(np.float32)
    y = np.full(top_shape, np.nan, np.float32)
    idx = np.full(top_shape, -7, np.int32)
    sto_pool_forward_train(x, geom, u, y, idx)
    y_ref, idx_ref = ref_train(x, geom, u)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_array_equal(y, y_ref)
    # the index points at the value reported (empty windows: -1 and 0)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    picked = np.take_along_axis(flat, np.maximum(idx, 0).reshape(flat.shape[:2] + (-1,)), 2).reshape(top_shape)
    np.testing.assert_array_equal(np.where(idx >= 0, picked, 0), y)
    # backward is MAX's scatter through the same index layout
    top_diff = rs.standard_normal(top_shape).astype(np.float32)
    bottom = np.full_like(x, np.nan)
    max_pool_backward(top_diff, idx, geom, bottom)
    assert np.vdot(y.astype(np.float64), top_diff) == pytest.approx(np.vdot(x.astype(np.float64), bottom), rel=1e-5)


def test_train_edge_draws():
    geom = make_pool_geom(1, 3, 1, 3, 1, 3, 0, 0)
    x = np.array([[[[0.0, 2.0, 2.0]]]], np.float32)
    y, idx = np.empty((1, 1, 1, 1), np.float32), np.empty((1, 1, 1, 1), np.int32)
    for u, expected in [(0.0, 0), (0.5, 1), (0.51, 2), (0.999, 2)]:
        sto_pool_forward_train(x, geom, np.full((1, 1, 1, 1), u, np.float32), y, idx)
        assert idx.item() == expected  # u = 0 takes the first pixel, even a zero one
    sto_pool_forward_train(np.zeros_like(x), geom, np.full((1, 1, 1, 1), 0.7, np.float32), y, idx)
    assert idx.item() == 0 and y.item() == 0  # all zero: the first pixel
    x, geom, top_shape, _ = _setup("empty_window")
    y, idx = np.full(top_shape, np.nan, np.float32), np.empty(top_shape, np.int32)
    sto_pool_forward_train(x, geom, np.full(top_shape, 0.5, np.float32), y, idx)
    assert top_shape == (1, 1, 2, 2) and (idx[0, 0, 1, :] == -1).all() and (y[0, 0, 1, :] == 0).all()


@pytest.mark.parametrize("case", CASES)
def test_test_forward_and_backward(case):
    x, geom, top_shape, rs = _setup(case)
    y = np.full(top_shape, np.nan, np.float32)
    sto_pool_forward_test(x, geom, y)
    np.testing.assert_allclose(y, ref_test(x, geom, top_shape), rtol=1e-5, atol=1e-6)
    top_diff = rs.standard_normal(top_shape).astype(np.float32)
    bottom = np.full_like(x, np.nan)  # the kernel zeroes it
    sto_pool_test_backward(x, top_diff, geom, bottom)
    np.testing.assert_allclose(bottom, ref_test_backward(x, top_diff, geom), rtol=1e-4, atol=1e-5)

"""STOCHASTIC pooling (Zeiler & Fergus 2013), forward and backward, with Caffe's window rules.

Geometry is the pooling ``geom`` of :func:`pycaffe_lite.kernels.pooling.make_pool_geom`
(``[H, W, kh, kw, sh, sw, ph, pw, OH, OW]``).  Arrays are NCHW float32.

Windows.  Caffe's stochastic kernels ignore the padding when they place a window -- it starts at
``oh*sh`` (not ``oh*sh - ph``) and ends at ``min(oh*sh + kh, H)`` -- although the output size
counts it.  We keep that quirk so the numbers match.  A window that starts past the image (only
possible with padding) is empty: its output is 0 and its index -1.

* TRAIN: with ``u`` uniform in [0, 1) per output, ``thres = u * sum(window)``; the output is the
  first pixel, in row-major order, at which the running sum reaches ``thres``.  Activations are
  assumed non-negative, so the pixel is drawn with probability proportional to its value.
  The chosen pixel's flat index ``h*W + w`` within its plane goes to ``out_idx`` (int32), the same
  layout as the MAX argmax mask, so :func:`pycaffe_lite.kernels.pooling.max_pool_backward` routes
  the gradient (-1 is skipped).  Sums run in float32 in scan order, as Caffe's do.
* TEST: the probability-weighted average ``sum(x^2) / sum(x)`` (0 when the sum is not positive).
  Caffe has no backward for it; :func:`sto_pool_test_backward` gives the exact derivative
  ``(2 x_i S - Q) / S^2`` (``S = sum x``, ``Q = sum x^2``) so a TEST-phase net still has a gradient.

All kernels use ``prange`` over the N*C planes: each thread reads and writes its own planes only.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .pooling import P_H, P_KH, P_KW, P_OH, P_OW, P_SH, P_SW, P_W


@njit(cache=True, parallel=True)
def sto_pool_forward_train(x, geom, u, out_y, out_idx):
    """Sample one pixel per window: ``x (N, C, H, W)``, ``u (N, C, OH, OW)`` in [0, 1) ->
    ``out_y (N, C, OH, OW)``, ``out_idx`` int32 (``h*W + w``, -1 for an empty window)."""
    N = x.shape[0]
    C = x.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    kh = geom[P_KH]
    kw = geom[P_KW]
    sh = geom[P_SH]
    sw = geom[P_SW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        xc = x[n, c]
        for oh in range(OH):
            hstart = oh * sh
            hend = min(hstart + kh, H)
            for ow in range(OW):
                wstart = ow * sw
                wend = min(wstart + kw, W)
                total = np.float32(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        total += xc[h, w]
                thres = np.float32(u[n, c, oh, ow] * total)
                value = np.float32(0.0)
                index = -1
                cumsum = np.float32(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        cumsum += xc[h, w]
                        if index < 0 and cumsum >= thres:
                            value = xc[h, w]
                            index = h * W + w
                out_y[n, c, oh, ow] = value
                out_idx[n, c, oh, ow] = index


@njit(cache=True, parallel=True)
def sto_pool_forward_test(x, geom, out_y):
    """Probability-weighted average per window: ``sum(x^2) / sum(x)``, 0 if ``sum(x) <= 0``."""
    N = x.shape[0]
    C = x.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    kh = geom[P_KH]
    kw = geom[P_KW]
    sh = geom[P_SH]
    sw = geom[P_SW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        xc = x[n, c]
        for oh in range(OH):
            hstart = oh * sh
            hend = min(hstart + kh, H)
            for ow in range(OW):
                wstart = ow * sw
                wend = min(wstart + kw, W)
                total = np.float32(0.0)
                squares = np.float32(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        v = xc[h, w]
                        total += v
                        squares += v * v
                out_y[n, c, oh, ow] = squares / total if total > 0 else np.float32(0.0)


@njit(cache=True, parallel=True)
def sto_pool_test_backward(x, top_diff, geom, out_bottom_diff):
    """Derivative of :func:`sto_pool_forward_test`; ``out_bottom_diff`` is zeroed here first and
    overlapping windows accumulate (``+=``)."""
    N = x.shape[0]
    C = x.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    kh = geom[P_KH]
    kw = geom[P_KW]
    sh = geom[P_SH]
    sw = geom[P_SW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        xc = x[n, c]
        bc = out_bottom_diff[n, c]
        bc[:] = np.float32(0.0)
        for oh in range(OH):
            hstart = oh * sh
            hend = min(hstart + kh, H)
            for ow in range(OW):
                wstart = ow * sw
                wend = min(wstart + kw, W)
                total = np.float32(0.0)
                squares = np.float32(0.0)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        v = xc[h, w]
                        total += v
                        squares += v * v
                if total <= 0:
                    continue  # the forward output is the constant 0 there
                g = top_diff[n, c, oh, ow] / (total * total)
                for h in range(hstart, hend):
                    for w in range(wstart, wend):
                        bc[h, w] += g * (np.float32(2.0) * xc[h, w] * total - squares)

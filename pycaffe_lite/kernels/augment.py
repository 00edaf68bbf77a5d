"""Per-pixel kernels of data augmentation: affine resampling (random scale and rotation) and
the two halves of HSV colour jitter (the powers between them are NumPy's; see
:func:`pycaffe_lite.data.transformer.hsv_jitter`).  Orchestration (drawing the parameters,
the order of the steps) lives in :mod:`pycaffe_lite.data.transformer`.

All run serially over a batch: a 64x3x32x32 batch is ~200k values, a few hundred
microseconds of work, where waking threads would cost as much as they save.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def affine_warp(src, mats, fill, out):
    """Resample every image of ``src`` through its own affine map, bilinearly.

    Parameters
    ----------
    src : (N, C, H, W) float32 or uint8
    mats : (N, 6) float64
        Row ``n`` maps an output pixel ``(y, x)`` to the source position
        ``sx = m0 x + m1 y + m2``, ``sy = m3 x + m4 y + m5`` (the inverse of the augmentation).
    fill : float
        Value of source pixels outside the image.
    out : (N, C, H, W) float32
        Written in full; must not be ``src``.
    """
    N, C, H, W = src.shape
    f = np.float32(fill)
    for n in range(N):
        m0, m1, m2, m3, m4, m5 = mats[n, 0], mats[n, 1], mats[n, 2], mats[n, 3], mats[n, 4], mats[n, 5]
        for y in range(H):
            bx = m1 * y + m2
            by = m4 * y + m5
            for x in range(W):
                # the source position and weights, shared by the channels (1.7x faster than per channel)
                sx = m0 * x + bx
                sy = m3 * x + by
                fx = np.floor(sx)
                fy = np.floor(sy)
                x0 = int(fx)
                y0 = int(fy)
                ax = np.float32(sx - fx)
                ay = np.float32(sy - fy)
                if 0 <= x0 and x0 + 1 < W and 0 <= y0 and y0 + 1 < H:  # the common case
                    for c in range(C):
                        v00 = np.float32(src[n, c, y0, x0])
                        v01 = np.float32(src[n, c, y0, x0 + 1])
                        v10 = np.float32(src[n, c, y0 + 1, x0])
                        v11 = np.float32(src[n, c, y0 + 1, x0 + 1])
                        top = v00 + ax * (v01 - v00)
                        bottom = v10 + ax * (v11 - v10)
                        out[n, c, y, x] = top + ay * (bottom - top)
                else:  # a neighbour outside the image reads `fill`
                    in_x0 = 0 <= x0 < W
                    in_x1 = 0 <= x0 + 1 < W
                    in_y0 = 0 <= y0 < H
                    in_y1 = 0 <= y0 + 1 < H
                    for c in range(C):
                        v00 = np.float32(src[n, c, y0, x0]) if in_y0 and in_x0 else f
                        v01 = np.float32(src[n, c, y0, x0 + 1]) if in_y0 and in_x1 else f
                        v10 = np.float32(src[n, c, y0 + 1, x0]) if in_y1 and in_x0 else f
                        v11 = np.float32(src[n, c, y0 + 1, x0 + 1]) if in_y1 and in_x1 else f
                        top = v00 + ax * (v01 - v00)
                        bottom = v10 + ax * (v11 - v10)
                        out[n, c, y, x] = top + ay * (bottom - top)


@njit(cache=True)
def rgb_to_hsv(x, max_value, r, b, out):
    """Convert 3-channel images to hue, saturation, value.

    Parameters
    ----------
    x : (N, 3, H, W) float32, C-contiguous
        Pixels in ``[0, max_value]`` (clipped to it).
    max_value : float
        Full intensity: pixels are converted to ``[0, 1]`` by ``1 / max_value``.
    r, b : int
        Channel indices of red and blue (green is 1): ``2, 0`` for Caffe's BGR records.
    out : (N, 3, H, W) float32, C-contiguous
        Channels ``h`` (in turns, ``[0, 1)``), ``s``, ``v`` (``[0, 1]``); grey pixels get
        ``h = s = 0``.  May be ``x``.
    """
    N = x.shape[0]
    P = x.shape[2] * x.shape[3]
    # float32 throughout: the float32 forms run faster, and the values are float32 anyway
    one = np.float32(1.0)
    zero = np.float32(0.0)
    six = np.float32(6.0)
    inv = np.float32(1.0 / max_value)
    for n in range(N):
        # 1-D views of each channel plane: faster than 2-D indexing (PERFORMANCE_NOTES)
        xr, xg, xb = x[n, r].ravel(), x[n, 1].ravel(), x[n, b].ravel()
        oh, os_, ov = out[n, 0].ravel(), out[n, 1].ravel(), out[n, 2].ravel()
        for i in range(P):
            rr = min(max(xr[i] * inv, zero), one)
            gg = min(max(xg[i] * inv, zero), one)
            bb = min(max(xb[i] * inv, zero), one)
            mx = max(rr, gg, bb)
            d = mx - min(rr, gg, bb)
            h = zero
            if d > zero:
                if mx == rr:
                    h = (gg - bb) / d / six
                    if h < zero:
                        h += one
                elif mx == gg:
                    h = ((bb - rr) / d + np.float32(2.0)) / six
                else:
                    h = ((rr - gg) / d + np.float32(4.0)) / six
            oh[i] = h
            os_[i] = d / mx if mx > zero else zero
            ov[i] = mx


@njit(cache=True)
def jitter_hsv_to_rgb(hsv, params, max_value, r, b, out):
    """Shift, scale and offset hue/saturation/value, clip, and convert back to RGB.

    Parameters
    ----------
    hsv : (N, 3, H, W) float32, C-contiguous
        From :func:`rgb_to_hsv`, with the powers ``s^p`` and ``v^p`` already applied (NumPy's
        SIMD ``log``/``exp`` do that ~15x faster than a scalar ``pow`` here).
    params : (N, 7) float32
        Per image: saturation power (unused here), factor, offset; value power (unused),
        factor, offset; hue shift.  ``s -> clip(s * f + o, 0, 1)``, the same for ``v``;
        ``h -> (h + shift) mod 1``.
    max_value : float
        Full intensity of the output.
    r, b : int
        Channel indices of red and blue in the output.
    out : (N, 3, H, W) float32, C-contiguous
        Pixels in ``[0, max_value]``.  May be ``hsv``.
    """
    N = hsv.shape[0]
    P = hsv.shape[2] * hsv.shape[3]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    six = np.float32(6.0)
    mv = np.float32(max_value)
    for n in range(N):
        sf, so = params[n, 1], params[n, 2]
        vf, vo = params[n, 4], params[n, 5]
        dh = params[n, 6]
        hh, hs, hv = hsv[n, 0].ravel(), hsv[n, 1].ravel(), hsv[n, 2].ravel()
        orr, og, ob = out[n, r].ravel(), out[n, 1].ravel(), out[n, b].ravel()
        for i in range(P):
            s = min(max(hs[i] * sf + so, zero), one)
            v = min(max(hv[i] * vf + vo, zero), one)
            h = hh[i] + dh
            h = h - np.floor(h)
            h6 = h * six
            k = int(h6)
            fr = h6 - np.float32(k)
            p = v * (one - s)
            q = v * (one - s * fr)
            t = v * (one - s * (one - fr))
            if k == 0 or k == 6:
                rr, gg, bb = v, t, p
            elif k == 1:
                rr, gg, bb = q, v, p
            elif k == 2:
                rr, gg, bb = p, v, t
            elif k == 3:
                rr, gg, bb = p, q, v
            elif k == 4:
                rr, gg, bb = t, p, v
            else:
                rr, gg, bb = v, p, q
            orr[i] = rr * mv
            og[i] = gg * mv
            ob[i] = bb * mv

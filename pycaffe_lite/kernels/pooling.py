"""MAX and AVE pooling, forward and backward, with Caffe's window rules.

Geometry travels as an int64 array ``geom`` made by :func:`make_pool_geom`::

    geom = [H, W, kh, kw, sh, sw, ph, pw, OH, OW]

Arrays are NCHW float32: ``x`` / ``bottom_diff`` ``(N, C, H, W)``; ``y`` / ``top_diff`` /
``mask`` ``(N, C, OH, OW)``; ``mask`` is int16 or int32 (the layer takes int16 when H*W fits)
and holds the argmax as a flat index ``h*W + w`` within the channel plane (Caffe's ``max_idx_``).
Global pooling is ``kh, kw = H, W``, pads 0, strides 1.

Windows (per axis, shown for h; ``hs0 = oh*sh - ph``):

* MAX: ``[max(hs0, 0), min(hs0 + kh, H))``; the first maximum in row-major order wins
  (strict ``>``, starting from ``-FLT_MAX`` and index -1).  Without padding and with
  stride > kernel, Caffe's ceil can leave a last window with no pixel: it yields ``-FLT_MAX``
  and mask -1, which backward skips (AVE yields 0/0 = NaN there, as in Caffe).
* AVE: ``hend = min(hs0 + kh, H + ph)``; ``pool_size = (hend - hs0) * (wend - ws0)`` counts
  the padding; the sum runs over the window clipped to the image; ``y = sum / pool_size``.

Sums are accumulated in float32 in Caffe's order, so results match Caffe's bit for bit.
All four kernels use ``prange`` over the N*C channel planes: planes are independent, there
are many of them (1280 for LeNet's pool1), and each thread writes its own planes only.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Indices into ``geom``.
P_H, P_W, P_KH, P_KW, P_SH, P_SW, P_PH, P_PW, P_OH, P_OW = range(10)
POOL_GEOM_LEN = 10

_NEG_FLT_MAX = np.float32(-np.finfo(np.float32).max)

# Element accesses in hot loops index with ``_U(...)`` (unsigned, non-negative by construction):
# a signed index makes Numba test for negative wraparound on every access (~20% of MAX forward
# on LeNet's pool1; 4-5x in im2col, see kernels/im2col.py).
_U = np.uint64


def pool_out_size(size: int, k: int, pad: int, stride: int, any_pad: bool | None = None) -> int:
    """Caffe's pooling output length along one axis.

    ``ceil((size + 2*pad - k) / stride) + 1``, minus 1 when the input is padded and the last
    window would start at or beyond ``size + pad`` (i.e. entirely in the padding).

    ``any_pad`` says whether the layer has any padding at all; Caffe applies the correction
    when ``pad_h || pad_w``, so for a layer padded only along the other axis pass
    ``any_pad=True``.  Default: ``pad > 0``.
    """
    if any_pad is None:
        any_pad = pad > 0
    out = -((k - size - 2 * pad) // stride) + 1  # exact integer ceil
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def make_pool_geom(H: int, W: int, kh: int, kw: int, sh: int = 1, sw: int = 1,
                   ph: int = 0, pw: int = 0) -> np.ndarray:
    """Pack a pooling's geometry into the int64 ``geom`` array the kernels take.

    Returns ``[H, W, kh, kw, sh, sw, ph, pw, OH, OW]``.

    Raises
    ------
    ValueError
        If a size, kernel or stride is < 1, a pad is < 0 or >= its kernel (Caffe's check),
        or the output would be empty.  Layers should check first and raise a ShapeError
        naming the layer; this is the last guard that keeps the kernels in bounds.
    """
    vals = {"H": H, "W": W, "kh": kh, "kw": kw, "sh": sh, "sw": sw, "ph": ph, "pw": pw}
    if min(H, W, kh, kw, sh, sw) < 1 or ph < 0 or pw < 0 or ph >= kh or pw >= kw:
        raise ValueError(f"pooling geometry: sizes, kernel and stride must be >= 1 and"
                         f" 0 <= pad < kernel; got {vals}")
    any_pad = ph > 0 or pw > 0
    OH = pool_out_size(H, kh, ph, sh, any_pad)
    OW = pool_out_size(W, kw, pw, sw, any_pad)
    if OH < 1 or OW < 1:
        raise ValueError(f"pooling geometry: output would be {OH}x{OW} for {vals}")
    return np.array([H, W, kh, kw, sh, sw, ph, pw, OH, OW], dtype=np.int64)


@njit(cache=True, parallel=True)
def max_pool_forward(x, geom, out_y, out_mask):
    """MAX pooling: ``x (N, C, H, W)`` -> ``out_y (N, C, OH, OW)``, ``out_mask`` int16/int32 argmax."""
    N = x.shape[0]
    C = x.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    kh = geom[P_KH]
    kw = geom[P_KW]
    sh = geom[P_SH]
    sw = geom[P_SW]
    ph = geom[P_PH]
    pw = geom[P_PW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        xc = x[n, c]
        yc = out_y[n, c]
        mc = out_mask[n, c]
        for oh in range(OH):
            hstart = oh * sh - ph
            hend = min(hstart + kh, H)
            hstart = max(hstart, 0)
            yrow = yc[oh]
            mrow = mc[oh]
            for ow in range(OW):
                wstart = ow * sw - pw
                wend = min(wstart + kw, W)
                wstart = max(wstart, 0)
                maxval = _NEG_FLT_MAX
                maxidx = -1
                for h in range(hstart, hend):
                    xrow = xc[h]
                    for w in range(wstart, wend):
                        v = xrow[_U(w)]
                        if v > maxval:  # strict: the first maximum in scan order wins
                            maxval = v
                            maxidx = h * W + w
                yrow[_U(ow)] = maxval
                mrow[_U(ow)] = maxidx


# Flat per-plane loops: zeroing a plane with ``plane[:] = 0`` on the 2-D view and scattering
# through 2-D indices took 2.5-3x longer than these 1-D loops (LeNet pool1 and CIFAR-10 quick
# pool1, one thread).  The arrays must be C-contiguous (blob storage is).
@njit(cache=True, parallel=True)
def max_pool_backward(top_diff, mask, geom, out_bottom_diff):
    """Scatter ``top_diff (N, C, OH, OW)`` to the argmax pixels; ``out_bottom_diff`` is zeroed
    here first, and windows sharing an argmax accumulate (``+=``)."""
    N = out_bottom_diff.shape[0]
    C = out_bottom_diff.shape[1]
    HW = geom[P_H] * geom[P_W]
    PP = geom[P_OH] * geom[P_OW]
    bottom_planes = out_bottom_diff.reshape(N * C, HW)
    top_planes = top_diff.reshape(N * C, PP)
    mask_planes = mask.reshape(N * C, PP)
    zero = np.float32(0.0)
    for p in prange(N * C):
        bc = bottom_planes[p]
        tc = top_planes[p]
        mc = mask_planes[p]
        for i in range(_U(0), _U(HW)):
            bc[i] = zero
        for q in range(_U(0), _U(PP)):
            idx = mc[q]
            if idx >= 0:  # -1: empty window, nothing to route to
                bc[_U(idx)] += tc[q]


# error_model="numpy": with no padding and stride > kernel Caffe can produce a window that lies
# wholly past the image, with pool_size 0; Caffe then yields 0/0 = NaN, and so do we (instead
# of raising ZeroDivisionError inside a kernel).
@njit(cache=True, parallel=True, error_model="numpy")
def ave_pool_forward(x, geom, out_y):
    """AVE pooling: ``x (N, C, H, W)`` -> ``out_y (N, C, OH, OW)``; padding counts in the size."""
    N = x.shape[0]
    C = x.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    kh = geom[P_KH]
    kw = geom[P_KW]
    sh = geom[P_SH]
    sw = geom[P_SW]
    ph = geom[P_PH]
    pw = geom[P_PW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        xc = x[n, c]
        yc = out_y[n, c]
        for oh in range(OH):
            hstart = oh * sh - ph
            hend = min(hstart + kh, H + ph)
            pool_h = hend - hstart
            hstart = max(hstart, 0)
            hend = min(hend, H)
            yrow = yc[oh]
            for ow in range(OW):
                wstart = ow * sw - pw
                wend = min(wstart + kw, W + pw)
                pool_size = pool_h * (wend - wstart)
                wstart = max(wstart, 0)
                wend = min(wend, W)
                acc = np.float32(0.0)  # float32 and row-major, as Caffe sums
                for h in range(hstart, hend):
                    xrow = xc[h]
                    for w in range(wstart, wend):
                        acc += xrow[_U(w)]
                yrow[_U(ow)] = np.float32(acc / np.float32(pool_size))


@njit(cache=True, parallel=True, error_model="numpy")  # see ave_pool_forward
def ave_pool_backward(top_diff, geom, out_bottom_diff):
    """Spread ``top_diff / pool_size`` over each clipped window; ``out_bottom_diff`` is zeroed
    here first and overlapping windows accumulate (``+=``)."""
    N = out_bottom_diff.shape[0]
    C = out_bottom_diff.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    kh = geom[P_KH]
    kw = geom[P_KW]
    sh = geom[P_SH]
    sw = geom[P_SW]
    ph = geom[P_PH]
    pw = geom[P_PW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    planes = out_bottom_diff.reshape(N * C, H * W)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        flat = planes[p]
        for i in range(_U(0), _U(H * W)):  # see max_pool_backward: faster than bc[:] = 0
            flat[i] = np.float32(0.0)
        bc = out_bottom_diff[n, c]
        tc = top_diff[n, c]
        for oh in range(OH):
            hstart = oh * sh - ph
            hend = min(hstart + kh, H + ph)
            pool_h = hend - hstart
            hstart = max(hstart, 0)
            hend = min(hend, H)
            trow = tc[oh]
            for ow in range(OW):
                wstart = ow * sw - pw
                wend = min(wstart + kw, W + pw)
                pool_size = pool_h * (wend - wstart)
                wstart = max(wstart, 0)
                wend = min(wend, W)
                g = np.float32(trow[_U(ow)] / np.float32(pool_size))
                for h in range(hstart, hend):
                    brow = bc[h]
                    for w in range(wstart, wend):
                        brow[_U(w)] += g

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
All four kernels use ``prange`` over the N*C channel planes (MAX backward with disjoint windows:
over chunks of planes): planes are independent, there are many of them (1280 for LeNet's pool1),
and each thread writes its own planes only.  :func:`max_pool_backward_serial` is MAX backward
without the parallel region, for small tensors.
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


@njit(inline="always")
def _window_max(xc, h0, h1, w0, w1, W):
    """The maximum of plane ``xc`` over rows ``h0:h1`` and columns ``w0:w1`` and its flat index
    (-FLT_MAX and -1 for an empty window; NaN never wins, the first maximum in scan order does:
    Caffe's rule).  Inlined into the kernels: no call per window."""
    maxval = _NEG_FLT_MAX
    maxidx = -1
    for h in range(h0, h1):
        xrow = xc[h]
        for w in range(w0, w1):
            v = xrow[_U(w)]
            if v > maxval:  # strict: the first maximum in scan order wins
                maxval = v
                maxidx = h * W + w
    return maxval, maxidx


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
                maxval, maxidx = _window_max(xc, hstart, hend, max(wstart, 0), wend, W)
                yrow[_U(ow)] = maxval
                mrow[_U(ow)] = maxidx


@njit(cache=True, parallel=True)
def max_pool_forward_2x2(x, geom, out_y, out_mask):
    """:func:`max_pool_forward` for 2x2 windows without padding (LeNet's pools; any stride): the
    windows that lie inside the image are written out (four loads and compares in scan order, the
    first maximum wins), the clipped ones at the bottom and right edges take the general loop.
    LeNet's pool1 (64x20x24x24) 0.44 -> 0.22 ms at two threads, the same bits."""
    N = x.shape[0]
    C = x.shape[1]
    H = geom[P_H]
    W = geom[P_W]
    sh = geom[P_SH]
    sw = geom[P_SW]
    OH = geom[P_OH]
    OW = geom[P_OW]
    inner_w = min(OW, (W - 2) // sw + 1)  # windows whose columns lie inside
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        xc = x[n, c]
        yc = out_y[n, c]
        mc = out_mask[n, c]
        for oh in range(OH):
            h0 = oh * sh
            yrow = yc[oh]
            mrow = mc[oh]
            start = 0
            if h0 + 2 <= H:
                r0 = xc[h0]
                r1 = xc[h0 + 1]
                base = h0 * W
                for ow in range(inner_w):
                    w0 = ow * sw
                    m = _NEG_FLT_MAX  # as the general kernel (and Caffe): a NaN never becomes the max
                    idx = -1
                    v = r0[_U(w0)]
                    if v > m:
                        m = v
                        idx = base + w0
                    v = r0[_U(w0 + 1)]
                    if v > m:
                        m = v
                        idx = base + w0 + 1
                    v = r1[_U(w0)]
                    if v > m:
                        m = v
                        idx = base + W + w0
                    v = r1[_U(w0 + 1)]
                    if v > m:
                        m = v
                        idx = base + W + w0 + 1
                    yrow[_U(ow)] = m
                    mrow[_U(ow)] = idx
                start = inner_w
            hend = min(h0 + 2, H)
            for ow in range(start, OW):
                wstart = ow * sw
                maxval, maxidx = _window_max(xc, h0, hend, wstart, min(wstart + 2, W), W)
                yrow[_U(ow)] = maxval
                mrow[_U(ow)] = maxidx


# MAX backward zeroes the bottom diff and scatters ``top_diff`` to the argmaxes.  When windows
# cannot overlap (stride >= kernel on both axes, e.g. LeNet's 2x2 stride 2) no two windows share
# an argmax, so the scatter may assign instead of add (the store no longer waits on a load), and
# the planes are zeroed as one flat run in long vectorised loops, a chunk at a time so that the
# scatter finds them in cache: 28 -> 20 us on LeNet's pool2 (64x50x8x8, one thread).  Overlapping
# windows add (``+=``), zeroing plane by plane in the parallel kernel.  Same bits as Caffe either
# way.  The loops are written out in each kernel: calling a shared @njit helper per plane or chunk
# costs ~30 ns a call (array arguments), 10-40% more on CIFAR-10 quick's pool1.  Arrays must be
# C-contiguous (blob storage is).
_UNPOOL_CHUNK = 4096  # bottom-diff floats per work item of the disjoint path (16 KB, in L1)


@njit(inline="always")
def _unpool_planes(top_flat, mask_flat, HW, PP, p0, p1, disjoint, out_flat):
    """Planes ``p0 .. p1-1`` of the MAX backward: zero them, then route each top diff to its
    argmax (``-1``: an empty window, nothing to route).  Disjoint windows never share an argmax,
    so they store; overlapping ones accumulate (``+=``, Caffe's order).  Inlined into both
    kernels below."""
    for i in range(_U(p0 * HW), _U(p1 * HW)):
        out_flat[i] = np.float32(0.0)
    for p in range(p0, p1):
        base = p * HW
        for q in range(_U(p * PP), _U(p * PP + PP)):
            idx = mask_flat[q]
            if idx >= 0:
                if disjoint:
                    out_flat[_U(base + idx)] = top_flat[q]
                else:
                    out_flat[_U(base + idx)] += top_flat[q]


@njit(cache=True, parallel=True)
def max_pool_backward(top_diff, mask, geom, out_bottom_diff):
    """Scatter ``top_diff (N, C, OH, OW)`` to the argmax pixels; ``out_bottom_diff`` is zeroed
    here first, and windows sharing an argmax accumulate (``+=``).  Disjoint windows (stride >=
    kernel) go ``_UNPOOL_CHUNK`` floats of planes per task, overlapping ones a plane per task."""
    NC = out_bottom_diff.shape[0] * out_bottom_diff.shape[1]
    HW = geom[P_H] * geom[P_W]
    PP = geom[P_OH] * geom[P_OW]
    out_flat = out_bottom_diff.reshape(NC * HW)
    top_flat = top_diff.reshape(NC * PP)
    mask_flat = mask.reshape(NC * PP)
    if geom[P_SH] >= geom[P_KH] and geom[P_SW] >= geom[P_KW]:  # disjoint windows
        chunk = max(1, _UNPOOL_CHUNK // HW)
        for ci in prange((NC + chunk - 1) // chunk):
            p0 = ci * chunk
            _unpool_planes(top_flat, mask_flat, HW, PP, p0, min(p0 + chunk, NC), True, out_flat)
    else:
        for p in prange(NC):
            _unpool_planes(top_flat, mask_flat, HW, PP, p, p + 1, False, out_flat)


@njit(cache=True)
def max_pool_backward_serial(top_diff, mask, geom, out_bottom_diff):
    """:func:`max_pool_backward` on the calling thread only, for small tensors: waking another
    thread for a parallel region costs more than the work (LeNet's pool2 backward, 2 threads:
    29 us parallel, 20 us serial)."""
    NC = out_bottom_diff.shape[0] * out_bottom_diff.shape[1]
    HW = geom[P_H] * geom[P_W]
    PP = geom[P_OH] * geom[P_OW]
    out_flat = out_bottom_diff.reshape(NC * HW)
    top_flat = top_diff.reshape(NC * PP)
    mask_flat = mask.reshape(NC * PP)
    if geom[P_SH] >= geom[P_KH] and geom[P_SW] >= geom[P_KW]:  # chunks in L1, as above
        chunk = max(1, _UNPOOL_CHUNK // HW)
        for p0 in range(0, NC, chunk):
            _unpool_planes(top_flat, mask_flat, HW, PP, p0, min(p0 + chunk, NC), True, out_flat)
    else:
        _unpool_planes(top_flat, mask_flat, HW, PP, 0, NC, False, out_flat)


# error_model="numpy": with no padding and stride > kernel Caffe can produce a window that lies
# wholly past the image, with pool_size 0; Caffe then yields 0/0 = NaN, and so do we (instead
# of raising ZeroDivisionError inside a kernel).
#
# 3x3 windows (the usual AVE window: CIFAR-10 quick, GoogLeNet) get their own loop nest, which
# indexes each plane as a flat run and writes a window lying wholly in the image, or each 3-pixel
# row of a clipped one, as straight-line code in Caffe's row-major order (same bits): 16-33% less
# time than the generic loops, whose two-or-three-trip inner loops cost more than their adds
# (CIFAR-10 quick's pool2 and pool3, one thread).  Folding those cases into the generic nest
# instead slowed other window sizes by 20-70%, hence two nests, chosen per plane.
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
    HW = H * W
    PP = OH * OW
    k3 = kh == 3 and kw == 3
    x_flat = x.reshape(N * C * HW)
    y_flat = out_y.reshape(N * C * PP)
    one = _U(1)
    two = _U(2)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        if k3:
            base = p * HW
            q = p * PP
            for oh in range(OH):
                hstart = oh * sh - ph
                hend = min(hstart + 3, H + ph)
                pool_h = hend - hstart
                hstart = max(hstart, 0)
                hend = min(hend, H)
                for ow in range(OW):
                    wstart = ow * sw - pw
                    wend = min(wstart + 3, W + pw)
                    pool_size = pool_h * (wend - wstart)
                    wstart = max(wstart, 0)
                    wend = min(wend, W)
                    acc = np.float32(0.0)  # float32 and row-major, as Caffe sums
                    if wend - wstart == 3:
                        if hend - hstart == 3:
                            r = _U(base + hstart * W + wstart)
                            acc += x_flat[r]
                            acc += x_flat[r + one]
                            acc += x_flat[r + two]
                            r += _U(W)
                            acc += x_flat[r]
                            acc += x_flat[r + one]
                            acc += x_flat[r + two]
                            r += _U(W)
                            acc += x_flat[r]
                            acc += x_flat[r + one]
                            acc += x_flat[r + two]
                        else:
                            for h in range(hstart, hend):
                                r = _U(base + h * W + wstart)
                                acc += x_flat[r]
                                acc += x_flat[r + one]
                                acc += x_flat[r + two]
                    else:
                        for h in range(hstart, hend):
                            r = base + h * W
                            for w in range(wstart, wend):
                                acc += x_flat[_U(r + w)]
                    y_flat[_U(q)] = np.float32(acc / np.float32(pool_size))
                    q += 1
        else:
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
                    acc = np.float32(0.0)
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
    HW = H * W
    PP = OH * OW
    k3 = kh == 3 and kw == 3
    b_flat = out_bottom_diff.reshape(N * C * HW)
    t_flat = top_diff.reshape(N * C * PP)
    one = _U(1)
    two = _U(2)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        base = p * HW
        for i in range(_U(base), _U(base + HW)):  # see max_pool_backward: faster than bc[:] = 0
            b_flat[i] = np.float32(0.0)
        if k3:
            q = p * PP
            for oh in range(OH):
                hstart = oh * sh - ph
                hend = min(hstart + 3, H + ph)
                pool_h = hend - hstart
                hstart = max(hstart, 0)
                hend = min(hend, H)
                for ow in range(OW):
                    wstart = ow * sw - pw
                    wend = min(wstart + 3, W + pw)
                    pool_size = pool_h * (wend - wstart)
                    wstart = max(wstart, 0)
                    wend = min(wend, W)
                    g = np.float32(t_flat[_U(q)] / np.float32(pool_size))
                    q += 1
                    if wend - wstart == 3:
                        if hend - hstart == 3:
                            r = _U(base + hstart * W + wstart)
                            b_flat[r] += g
                            b_flat[r + one] += g
                            b_flat[r + two] += g
                            r += _U(W)
                            b_flat[r] += g
                            b_flat[r + one] += g
                            b_flat[r + two] += g
                            r += _U(W)
                            b_flat[r] += g
                            b_flat[r + one] += g
                            b_flat[r + two] += g
                        else:
                            for h in range(hstart, hend):
                                r = _U(base + h * W + wstart)
                                b_flat[r] += g
                                b_flat[r + one] += g
                                b_flat[r + two] += g
                    else:
                        for h in range(hstart, hend):
                            r = base + h * W
                            for w in range(wstart, wend):
                                b_flat[_U(r + w)] += g
        else:
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

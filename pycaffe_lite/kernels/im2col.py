"""Whole-batch im2col / col2im for convolution as one GEMM per pass.

Geometry travels as an int64 array ``geom`` made by :func:`make_geom`::

    geom = [C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW]

with ``OH = conv_out_size(H, kh, ph, sh, dh)`` (likewise ``OW``).  Let ``K = C*kh*kw`` and
``P = OH*OW``.  The batch size ``N`` is read from the arrays.  Patch columns are ordered as in
Caffe, ``k = c*kh*kw + i*kw + j`` (so a Caffe weight blob ``(Cout, C, kh, kw)`` reshaped to
``(Cout, K)`` multiplies them as is), and output pixels as ``q = n*P + oh*OW + ow``.

Three layouts of the same matrix, each with its adjoint (the Convolution layer calls them on a
chunk of images at a time, so ``N`` there is the chunk):

``im2row_nhwc`` / ``row2im_nhwc`` -- ``rows (N*P, K)`` from a channels-last ``xh (N, H, W, C)``,
    columns ordered ``(i, j, c)``; see the section at the end.  The layer's path when a kernel
    row holds many floats (``kw*C``) and group == 1.

``im2col_batch`` / ``col2im_batch`` -- ``col (K, N*P)``, ``col[k, q]``.  The layer's path for
    few channels and for groups.  Caffe's per-image column buffer, images concatenated along columns.
    Forward for group g (rows ``g*K_g:(g+1)*K_g`` of col, ``K_g = C/group*kh*kw``):
    ``W_g (Cout_g, K_g) @ col_g -> (Cout_g, N*P)``, then one copy to ``(N, Cout, OH, OW)``.
    Backward: ``dW_g += dy_g @ col_g.T``; ``dcol_g = W_g.T @ dy_g``; col2im; with
    ``dy (Cout, N*P)`` one copy of top_diff ``(N, Cout, P)`` transposed to ``(Cout, N, P)``.

``im2row_batch`` / ``row2im_batch`` -- ``rows (N*P, K)``, ``rows[q, k]``  (= ``col.T``).
    Forward: ``rows @ W.T -> (N*P, Cout)`` (NHWC order), then a copy to NCHW.  Measured
    slower end to end with NCHW blobs (benchmarks/kernels_bench.py, LeNet, batch 64: im2row
    costs more than im2col and the (N*P, Cout) -> NCHW copy more than (Cout, N*P) -> NCHW,
    which outweighs its slightly faster GEMM for conv2); kept as the tested alternative.

Serial twins.  ``im2col_serial``, ``col2im_serial``, ``im2row_nhwc_serial`` and
``row2im_nhwc_serial`` give the same bits as their parallel kernels on the calling thread alone,
compiled ``nogil=True``: the Convolution layer runs two halves of a batch on two threads of its
own, each with these (one body per task, ``_im2col_row`` etc., shared by both twins).

Zero padding.  Element ``(k, q)`` reads ``x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]``, or
0 when that falls outside the image.  The col2im/row2im adjoints sum every contribution to an
input pixel in increasing ``k`` order, the order of Caffe's col2im.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Indices into ``geom``.
G_C, G_H, G_W, G_KH, G_KW, G_SH, G_SW, G_PH, G_PW, G_DH, G_DW, G_OH, G_OW = range(13)
GEOM_LEN = 13


def conv_out_size(size: int, k: int, pad: int, stride: int, dilation: int = 1) -> int:
    """Caffe's convolution output length along one axis.

    ``floor((size + 2*pad - (dilation*(k - 1) + 1)) / stride) + 1``.  May be <= 0 when the
    dilated kernel does not fit the padded input; the caller rejects that.
    """
    extent = dilation * (k - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


def make_geom(C: int, H: int, W: int, kh: int, kw: int, sh: int = 1, sw: int = 1,
              ph: int = 0, pw: int = 0, dh: int = 1, dw: int = 1) -> np.ndarray:
    """Pack a convolution's geometry into the int64 ``geom`` array the kernels take.

    Returns ``[C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW]``.

    Raises
    ------
    ValueError
        If a size, kernel, stride or dilation is < 1, a pad is < 0, or the output would be
        empty.  (Layers should check first and raise a ShapeError naming the layer; this is the
        last guard that keeps the kernels from writing out of bounds.)
    """
    vals = {"C": C, "H": H, "W": W, "kh": kh, "kw": kw, "sh": sh, "sw": sw, "dh": dh, "dw": dw}
    bad = {k: v for k, v in vals.items() if int(v) < 1}
    if bad or ph < 0 or pw < 0:
        raise ValueError(f"convolution geometry: sizes, kernel, stride and dilation must be >= 1"
                         f" and pads >= 0; got {vals | {'ph': ph, 'pw': pw}}")
    OH = conv_out_size(H, kh, ph, sh, dh)
    OW = conv_out_size(W, kw, pw, sw, dw)
    if OH < 1 or OW < 1:
        raise ValueError(f"convolution geometry: output would be {OH}x{OW} for input {H}x{W},"
                         f" kernel {kh}x{kw}, pad {ph}x{pw}, dilation {dh}x{dw}; the dilated"
                         f" kernel must fit the padded input")
    return np.array([C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW], dtype=np.int64)


@njit(cache=True)
def _valid_range(off, stride, out_len, in_len):
    """[lo, hi) of output positions o with 0 <= o*stride + off < in_len."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    hi = out_len
    last = in_len - 1 - off  # need o*stride <= last
    if last < 0:
        hi = 0
    elif last // stride + 1 < hi:
        hi = last // stride + 1
    lo = min(lo, hi)
    return lo, hi


# Hot loops index with unsigned integers (``_U``): with signed indices Numba adds a
# negative-index wraparound test to every access, which blocks vectorisation and made these
# kernels 4-5x slower (measured: conv2 im2col 2.7 -> 0.55 ms single-threaded).  Every
# unsigned index below is non-negative by construction (``_valid_range``; the start offsets are
# clamped at 0 for the empty ranges where they are unused).  Keep all operands of an index
# expression unsigned: Numba types uint64 (op) int64 as float64.
_U = np.uint64


@njit(cache=True)
def _zero(a, lo, hi):
    """a[lo:hi] = 0 for a 1-D view; a plain loop is ~2x faster than Numba's slice fill here."""
    zero = np.float32(0.0)
    for t in range(_U(lo), _U(hi)):
        a[t] = zero


@njit(cache=True, nogil=True)
def _im2col_row(x, geom, r, row):
    """Row ``r`` of :func:`im2col_batch`'s ``out_col`` (``row``, a 1-D view) for every image of ``x``."""
    N = x.shape[0]
    H = geom[G_H]
    W = geom[G_W]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    dh = geom[G_DH]
    dw = geom[G_DW]
    OH = geom[G_OH]
    OW = geom[G_OW]
    P = OH * OW
    usw = _U(sw)
    c = r // (kh * kw)
    i = (r // kw) % kh
    j = r % kw
    hoff = i * dh - ph
    woff = j * dw - pw
    oh_lo, oh_hi = _valid_range(hoff, sh, OH, H)
    ow_lo, ow_hi = _valid_range(woff, sw, OW, W)
    nvalid = _U(ow_hi - ow_lo)
    for n in range(N):
        xc = x[n, c]
        base = n * P
        _zero(row, base, base + oh_lo * OW)          # window rows above the image
        _zero(row, base + oh_hi * OW, base + P)      # and below it
        for oh in range(oh_lo, oh_hi):
            src = xc[oh * sh + hoff]
            b = base + oh * OW
            _zero(row, b, b + ow_lo)
            _zero(row, b + ow_hi, b + OW)
            ub = _U(b + ow_lo)
            us = _U(max(ow_lo * sw + woff, 0))     # first valid source column
            if sw == 1:
                for t in range(_U(0), nvalid):
                    row[ub + t] = src[us + t]
            else:
                for t in range(_U(0), nvalid):
                    row[ub + t] = src[us + t * usw]


# parallel=True: the rows of col are independent and each is one long contiguous stretch of
# memory, so the threads split the K rows without sharing cache lines.
@njit(cache=True, parallel=True)
def im2col_batch(x, geom, out_col):
    """Whole-batch im2col: ``x (N, C, H, W)`` -> ``out_col (C*kh*kw, N*OH*OW)``.

    ``out_col[c*kh*kw + i*kw + j, n*OH*OW + oh*OW + ow] =
    x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]`` (0 outside the image).  Every element of
    ``out_col`` is written.
    """
    for r in prange(out_col.shape[0]):
        _im2col_row(x, geom, r, out_col[r])


@njit(cache=True, nogil=True)
def im2col_serial(x, geom, out_col):
    """:func:`im2col_batch` on the calling thread only, without the GIL (for callers that run
    two halves of a batch on two threads of their own)."""
    for r in range(out_col.shape[0]):
        _im2col_row(x, geom, r, out_col[r])


# Images per col2im task: a task streams its channel's kh*kw rows of col over a block of images.
_COL2IM_BLOCK = 8


@njit(cache=True, nogil=True)
def _col2im_task(col, geom, c, n0, n1, out_x):
    """Channel ``c`` of images ``n0:n1`` of :func:`col2im_batch`: zeroed, then every entry of
    its kh*kw rows of ``col`` added, in increasing row order."""
    H = geom[G_H]
    W = geom[G_W]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    dh = geom[G_DH]
    dw = geom[G_DW]
    OH = geom[G_OH]
    OW = geom[G_OW]
    P = OH * OW
    usw = _U(sw)
    for n in range(n0, n1):
        out_x[n, c] = np.float32(0.0)
    for i in range(kh):
        hoff = i * dh - ph
        oh_lo, oh_hi = _valid_range(hoff, sh, OH, H)
        for j in range(kw):
            woff = j * dw - pw
            ow_lo, ow_hi = _valid_range(woff, sw, OW, W)
            nvalid = _U(ow_hi - ow_lo)
            ud = _U(max(ow_lo * sw + woff, 0))     # first valid target column
            row = col[(c * kh + i) * kw + j]
            for n in range(n0, n1):
                xc = out_x[n, c]
                for oh in range(oh_lo, oh_hi):
                    dst = xc[oh * sh + hoff]
                    ub = _U(n * P + oh * OW + ow_lo)
                    for t in range(_U(0), nvalid):
                        dst[ud + t * usw] += row[ub + t]


# parallel=True over (channel, block of images) tasks: each task owns out_x[n0:n1, c], so there
# are no write races, and it reads its channel's kh*kw rows of col in long contiguous runs
# (15% faster than one task per image for LeNet's conv2, and still parallel when C == 1).
@njit(cache=True, parallel=True)
def col2im_batch(col, geom, out_x):
    """Adjoint of :func:`im2col_batch`: ``col (C*kh*kw, N*OH*OW)`` -> ``out_x (N, C, H, W)``.

    ``out_x`` is zeroed here, then every column entry is added (``+=``) to the pixel it was
    read from, in increasing row order (Caffe's); entries that came from padding are dropped.
    """
    N = out_x.shape[0]
    nblocks = (N + _COL2IM_BLOCK - 1) // _COL2IM_BLOCK
    for task in prange(geom[G_C] * nblocks):
        c = task // nblocks
        n0 = (task - c * nblocks) * _COL2IM_BLOCK
        _col2im_task(col, geom, c, n0, min(n0 + _COL2IM_BLOCK, N), out_x)


@njit(cache=True, nogil=True)
def col2im_serial(col, geom, out_x):
    """:func:`col2im_batch` on the calling thread only, without the GIL (same order of sums)."""
    N = out_x.shape[0]
    for c in range(geom[G_C]):
        for n0 in range(0, N, _COL2IM_BLOCK):
            _col2im_task(col, geom, c, n0, min(n0 + _COL2IM_BLOCK, N), out_x)


# parallel=True over the batch: each image owns the rows n*P..n*P+P-1 of the output.
@njit(cache=True, parallel=True)
def im2row_batch(x, geom, out_rows):
    """Whole-batch im2row: ``x (N, C, H, W)`` -> ``out_rows (N*OH*OW, C*kh*kw)``.

    ``out_rows[q, k] == col[k, q]`` of :func:`im2col_batch` (same index formulas); every element
    is written.
    """
    N = x.shape[0]
    C = geom[G_C]
    H = geom[G_H]
    W = geom[G_W]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    dh = geom[G_DH]
    dw = geom[G_DW]
    OH = geom[G_OH]
    OW = geom[G_OW]
    P = OH * OW
    udw = _U(dw)
    for n in prange(N):
        xn = x[n]
        for oh in range(OH):
            for ow in range(OW):
                dst = out_rows[n * P + oh * OW + ow]
                w0 = ow * sw - pw
                j_lo, j_hi = _valid_range(w0, dw, kw, W)
                nvalid = _U(j_hi - j_lo)
                us = _U(max(w0 + j_lo * dw, 0))         # first valid source column
                for c in range(C):
                    xc = xn[c]
                    for i in range(kh):
                        k0 = (c * kh + i) * kw
                        h = oh * sh - ph + i * dh
                        if h < 0 or h >= H:
                            _zero(dst, k0, k0 + kw)
                            continue
                        _zero(dst, k0, k0 + j_lo)
                        _zero(dst, k0 + j_hi, k0 + kw)
                        src = xc[h]
                        ud = _U(k0 + j_lo)
                        for t in range(_U(0), nvalid):
                            dst[ud + t] = src[us + t * udw]


# parallel=True over the batch: each image is written by one thread only.
@njit(cache=True, parallel=True)
def row2im_batch(rows, geom, out_x):
    """Adjoint of :func:`im2row_batch`: ``rows (N*OH*OW, C*kh*kw)`` -> ``out_x (N, C, H, W)``.

    ``out_x`` is zeroed here, then contributions are added in increasing ``k`` order per pixel
    (the same order as :func:`col2im_batch`, so both give identical bits).
    """
    N = out_x.shape[0]
    C = geom[G_C]
    H = geom[G_H]
    W = geom[G_W]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    dh = geom[G_DH]
    dw = geom[G_DW]
    OH = geom[G_OH]
    OW = geom[G_OW]
    P = OH * OW
    usw = _U(sw)
    for n in prange(N):
        xn = out_x[n]
        xn[:] = np.float32(0.0)
        rn = rows[n * P: n * P + P]
        for c in range(C):
            xc = xn[c]
            for i in range(kh):
                hoff = i * dh - ph
                oh_lo, oh_hi = _valid_range(hoff, sh, OH, H)
                for j in range(kw):
                    woff = j * dw - pw
                    ow_lo, ow_hi = _valid_range(woff, sw, OW, W)
                    nvalid = _U(ow_hi - ow_lo)
                    colk = rn[:, (c * kh + i) * kw + j]      # strided 1-D view
                    for oh in range(oh_lo, oh_hi):
                        dst = xc[oh * sh + hoff]
                        uq = _U(oh * OW + ow_lo)
                        ud = _U(max(ow_lo * sw + woff, 0))
                        for t in range(_U(0), nvalid):
                            dst[ud + t * usw] += colk[uq + t]


# ---------------------------------------------------------------------------------------------
# Channels-last rows, for the Convolution layer's chunked path.
#
# ``xh (N, H, W, C)`` (NHWC) -> ``rows (N*OH*OW, kh*kw*C)`` with columns ordered
# ``k = (i*kw + j)*C + c``: for an output pixel and a kernel row ``i`` the ``kw*C`` entries are one
# contiguous stretch of ``xh[n, h]`` when ``dw == 1``, so a copy of kw*C floats replaces kw*C
# scattered reads.  A Caffe weight blob ``(Cout, C, kh, kw)`` transposed to ``(Cout, kh, kw, C)``
# multiplies these rows.  Zero padding as in :func:`im2col_batch`.


@njit(cache=True, nogil=True)
def _im2row_task(xh, geom, n, oh, out_rows):
    """The OW rows of :func:`im2row_nhwc`'s ``out_rows`` of image ``n``, output row ``oh``."""
    H = geom[G_H]
    W = geom[G_W]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    dh = geom[G_DH]
    dw = geom[G_DW]
    OH = geom[G_OH]
    OW = geom[G_OW]
    C = geom[G_C]
    uC = _U(C)
    for ow in range(OW):
        dst = out_rows[(n * OH + oh) * OW + ow]
        w0 = ow * sw - pw
        j_lo, j_hi = _valid_range(w0, dw, kw, W)
        for i in range(kh):
            k0 = i * kw * C
            h = oh * sh - ph + i * dh
            if h < 0 or h >= H:
                _zero(dst, k0, k0 + kw * C)
                continue
            _zero(dst, k0, k0 + j_lo * C)
            _zero(dst, k0 + j_hi * C, k0 + kw * C)
            src = xh[n, h].reshape(-1)    # (W*C,) contiguous
            if dw == 1:
                ud = _U(k0 + j_lo * C)
                us = _U(max(w0 + j_lo, 0) * C)
                for t in range(_U(0), _U((j_hi - j_lo) * C)):
                    dst[ud + t] = src[us + t]
            else:
                for j in range(j_lo, j_hi):
                    ud = _U(k0 + j * C)
                    us = _U((w0 + j * dw) * C)
                    for t in range(_U(0), uC):
                        dst[ud + t] = src[us + t]


@njit(cache=True, parallel=True, nogil=True)
def im2row_nhwc(xh, geom, out_rows):
    """``xh (N, H, W, C)`` -> ``out_rows (N*OH*OW, kh*kw*C)``; every element is written.

    ``out_rows[n*P + oh*OW + ow, (i*kw + j)*C + c] = xh[n, oh*sh - ph + i*dh, ow*sw - pw + j*dw, c]``
    (0 outside the image), ``P = OH*OW``.
    """
    OH = geom[G_OH]
    for task in prange(xh.shape[0] * OH):       # one (image, output row) per task
        n = task // OH
        _im2row_task(xh, geom, n, task - n * OH, out_rows)


@njit(cache=True, nogil=True)
def im2row_nhwc_serial(xh, geom, out_rows):
    """:func:`im2row_nhwc` on the calling thread only (see :func:`im2col_serial`)."""
    for n in range(xh.shape[0]):
        for oh in range(geom[G_OH]):
            _im2row_task(xh, geom, n, oh, out_rows)


@njit(cache=True, nogil=True)
def _row2im_task(rows, geom, n, h, out_xh):
    """Input row ``h`` of image ``n`` of :func:`row2im_nhwc`: zeroed, then everything that
    falls on it added, per pixel over (i, j) in increasing order."""
    W = geom[G_W]
    kh = geom[G_KH]
    kw = geom[G_KW]
    sh = geom[G_SH]
    sw = geom[G_SW]
    ph = geom[G_PH]
    pw = geom[G_PW]
    dh = geom[G_DH]
    dw = geom[G_DW]
    OH = geom[G_OH]
    OW = geom[G_OW]
    C = geom[G_C]
    uC = _U(C)
    dst = out_xh[n, h].reshape(-1)   # (W*C,) contiguous
    _zero(dst, 0, W * C)
    for i in range(kh):
        t_h = h + ph - i * dh        # = oh*sh
        if t_h < 0 or t_h % sh != 0:
            continue
        oh = t_h // sh
        if oh >= OH:
            continue
        for j in range(kw):
            woff = j * dw - pw
            ow_lo, ow_hi = _valid_range(woff, sw, OW, W)
            k0 = (i * kw + j) * C
            for ow in range(ow_lo, ow_hi):
                src = rows[(n * OH + oh) * OW + ow]
                ud = _U((ow * sw + woff) * C)
                us = _U(k0)
                for t in range(_U(0), uC):
                    dst[ud + t] += src[us + t]


@njit(cache=True, parallel=True, nogil=True)
def row2im_nhwc(rows, geom, out_xh):
    """Adjoint of :func:`im2row_nhwc`: ``rows (N*OH*OW, kh*kw*C)`` -> ``out_xh (N, H, W, C)``.

    ``out_xh`` is zeroed here, then every entry is added to the pixel it was read from (entries
    from padding are dropped).  Each (image, input row) is one task that gathers what falls on
    it, so there are no write races; per pixel the sum runs over (i, j) in increasing order.
    """
    H = geom[G_H]
    for task in prange(out_xh.shape[0] * H):        # one (image, input row) per task
        n = task // H
        _row2im_task(rows, geom, n, task - n * H, out_xh)


@njit(cache=True, nogil=True)
def row2im_nhwc_serial(rows, geom, out_xh):
    """:func:`row2im_nhwc` on the calling thread only (same order of sums)."""
    for n in range(out_xh.shape[0]):
        for h in range(geom[G_H]):
            _row2im_task(rows, geom, n, h, out_xh)

"""Convolution weight gradient for small filter banks: ``out += d @ col.T``.

``d (O, L)`` is the top diff of a chunk of images laid out ``(Cout, n*P)``, ``col (K, L)`` its
columns (im2col), ``out (O, K)`` the weight-gradient accumulator; ``L = n*P`` is long (LeNet's
conv1: 20 x 25 outputs over 36,864 pixels).  BLAS runs this shape at low efficiency (its tiles
are built for large outputs), so here each output is a dot product of two contiguous rows: the
long dimension is cut into tiles of ``TILE`` floats (a tile of ``d`` and ``col`` stays in L1/L2)
and within a tile 2 output channels x 4 patch rows are summed at once (six rows loaded, eight
sums kept in vector registers).

Only the reduction is reordered (``fastmath`` reassociation and contraction, no other flags):
each tile's sum is one float32 dot product split over vector lanes, then added to ``out``, the
same float32 rounding as BLAS's (also lane-split) sums.  Compiled ``nogil=True``: the two halves
of a split batch call it at once, each on its own accumulator.

Measured at one thread (LeNet conv1, 64 images: 0.31-0.38 ms against 0.51 ms for OpenBLAS's
``col @ d.T``; CIFAR-10 quick's 32 x 75 outputs: no gain, so the layer keeps BLAS there).
"""
import numpy as np
from numba import njit

#: floats of the long dimension per tile: 2 x 512 floats of d and 4 x 512 of col per block
TILE = 512
#: the same for :func:`wgrad_shifted_accumulate`, whose rows are one image long
SHIFT_TILE = 4096


@njit(inline="always", fastmath={"reassoc", "contract"})
def _dots_2x4(a0, a1, b0, b1, b2, b3, n):
    """The eight dot products of ``a0, a1`` with ``b0 .. b3`` over their first ``n`` floats, in one
    pass (inlined into the kernels: no call per block)."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0)
    for i in range(n):
        x0 = a0[i]
        x1 = a1[i]
        y0 = b0[i]
        y1 = b1[i]
        y2 = b2[i]
        y3 = b3[i]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
    return s00, s01, s02, s03, s10, s11, s12, s13


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def wgrad_accumulate(d, col, out):
    """``out (O, K) += d (O, L) @ col (K, L).T`` in float32; C-contiguous rows."""
    O, L = d.shape
    K = col.shape[0]
    for l0 in range(0, L, TILE):
        l1 = min(L, l0 + TILE)
        n = l1 - l0
        for o in range(0, O, 2):
            if o + 1 < O:
                a0 = d[o, l0:l1]
                a1 = d[o + 1, l0:l1]
                k = 0
                while k + 4 <= K:
                    b0 = col[k, l0:l1]
                    b1 = col[k + 1, l0:l1]
                    b2 = col[k + 2, l0:l1]
                    b3 = col[k + 3, l0:l1]
                    s00, s01, s02, s03, s10, s11, s12, s13 = _dots_2x4(a0, a1, b0, b1, b2, b3, n)
                    out[o, k] += s00
                    out[o, k + 1] += s01
                    out[o, k + 2] += s02
                    out[o, k + 3] += s03
                    out[o + 1, k] += s10
                    out[o + 1, k + 1] += s11
                    out[o + 1, k + 2] += s12
                    out[o + 1, k + 3] += s13
                    k += 4
                while k < K:
                    b0 = col[k, l0:l1]
                    s00 = s10 = np.float32(0)
                    for i in range(n):
                        s00 += a0[i] * b0[i]
                        s10 += a1[i] * b0[i]
                    out[o, k] += s00
                    out[o + 1, k] += s10
                    k += 1
            else:  # an odd last channel
                a0 = d[o, l0:l1]
                for k in range(K):
                    b0 = col[k, l0:l1]
                    s00 = np.float32(0)
                    for i in range(n):
                        s00 += a0[i] * b0[i]
                    out[o, k] += s00



@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def wgrad_shifted_accumulate(dy, x, offsets, wide, out):
    """``out[o, k] += sum_n sum_(oy, ox) dy[n, o, oy, ox] x[n, offsets[k] + oy*Wp + ox]`` in float32.

    The weight gradient of a stride-1 convolution straight from the image, without columns:
    ``dy (n, O, OH, OW)`` the top diff, ``x (n, C*Hp*Wp)`` the (padded) images, ``offsets[k]``
    the flat offset of patch element ``k = (c, ky, kx)``: ``c*Hp*Wp + ky*dh*Wp + kx*dw``;
    ``wide (O, OH*Wp)`` scratch.  Each image's ``dy`` is copied into ``wide`` with its rows
    widened to the image width ``Wp`` by zeros, so position ``j = oy*Wp + ox`` pairs
    ``dy[oy, ox]`` with ``x[c, oy + ky*dh, ox + kx*dw]`` (the zeros drop ``ox >= OW``) and each
    sum is a contiguous dot product of length ``L = (OH-1)*Wp + OW``, blocked like
    :func:`wgrad_accumulate`: 2 output channels x 4 offsets per pass, ``TILE`` floats at a time.
    ``Wp/OW`` more multiply-adds than the columns (LeNet conv1: 28/24) but no im2col and no
    separate copy of ``dy``.  Serial and ``nogil``: each half of a split batch calls it on its
    own ``wide`` and ``out``."""
    N, O, OH, OW = dy.shape
    K = offsets.shape[0]
    Wp = wide.shape[1] // OH
    L = (OH - 1) * Wp + OW
    for o in range(O):
        for r in range(OH):
            for j in range(OW, Wp):
                wide[o, r * Wp + j] = 0
    for m in range(N):
        for o in range(O):
            for r in range(OH):
                src = dy[m, o, r]
                dst = wide[o, r * Wp:r * Wp + OW]
                for j in range(OW):
                    dst[j] = src[j]
        for l0 in range(0, L, SHIFT_TILE):
            n = min(L, l0 + SHIFT_TILE) - l0
            for o in range(0, O, 2):
                o1 = min(o + 1, O - 1)  # an odd last channel: summed twice, kept once
                a0 = wide[o, l0:l0 + n]
                a1 = wide[o1, l0:l0 + n]
                k = 0
                while k < K:
                    # 4 offsets at a time; a short last block repeats its last offset
                    e0 = offsets[k] + l0
                    e1 = offsets[min(k + 1, K - 1)] + l0
                    e2 = offsets[min(k + 2, K - 1)] + l0
                    e3 = offsets[min(k + 3, K - 1)] + l0
                    b0 = x[m, e0:e0 + n]
                    b1 = x[m, e1:e1 + n]
                    b2 = x[m, e2:e2 + n]
                    b3 = x[m, e3:e3 + n]
                    s00, s01, s02, s03, s10, s11, s12, s13 = _dots_2x4(a0, a1, b0, b1, b2, b3, n)
                    kk = min(4, K - k)
                    out[o, k] += s00
                    if kk > 1:
                        out[o, k + 1] += s01
                    if kk > 2:
                        out[o, k + 2] += s02
                    if kk > 3:
                        out[o, k + 3] += s03
                    if o1 != o:
                        out[o1, k] += s10
                        if kk > 1:
                            out[o1, k + 1] += s11
                        if kk > 2:
                            out[o1, k + 2] += s12
                        if kk > 3:
                            out[o1, k + 3] += s13
                    k += 4


def shift_offsets(C: int, Hp: int, Wp: int, kh: int, kw: int, dh: int, dw: int) -> np.ndarray:
    """The ``offsets`` of :func:`wgrad_shifted_accumulate`, in the weights' (c, ky, kx) order."""
    c, ky, kx = np.meshgrid(np.arange(C), np.arange(kh), np.arange(kw), indexing="ij")
    return (c * Hp * Wp + ky * dh * Wp + kx * dw).reshape(-1).astype(np.int64)

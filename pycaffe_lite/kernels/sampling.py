"""Kernels of the contrastive-divergence step (RBM layer): logistic units, sampling, statistics.

What is here and what is not, by measurement (batch 20, 500 hidden, 784 visible, 2 cores):

* The products go to BLAS through ``np.matmul(out=...)`` (100-150 us each, ~75% of an
  iteration; nothing written here comes close).  The hidden units' arrays are unit-major
  (H, N): ``W x^T`` reads W as stored and takes ~110 us, where ``x W^T`` (which makes BLAS
  pack a transposed W) took ~210 us with OpenBLAS's SkylakeX kernel; the ``_t`` kernels move
  values between that layout and the item-major (N, H) top and uniforms.
* The transcendental stays in NumPy: the layer computes ``sigmoid(z) = 0.5 tanh(z / 2) + 0.5``
  with ``np.tanh``, whose SIMD loop takes ~3 us per 10,000 values, where a Numba loop calling
  the scalar ``expf`` (no SVML here) takes ~21 us.  The tanh form never overflows.
* Numba does the arithmetic around it in single passes that NumPy would need two to four
  ufunc calls and temporaries for: ``0.5 (a + bias)`` before the tanh; after it, the
  probability, its copies/negation for the statistics and the Bernoulli draw (compare a
  uniform with the probability) in one loop; accumulating a scaled product into a parameter
  diff; signed column sums for the bias diffs; free energies and squared errors in float64.

Every kernel takes preallocated float32 arrays (outputs last), allocates nothing, and runs
serially: at these sizes a thread wake-up costs more than the loop.  2-D arguments are
C-contiguous or slices of a C-contiguous buffer (rows or columns of it).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def add_bias_half(a, bias, out):
    """``out[r, j] = 0.5 * (a[r, j] + bias[j])``: the tanh argument of ``sigmoid(a + bias)``
    (``out`` may be ``a``)."""
    half = np.float32(0.5)
    for r in range(a.shape[0]):
        ar = a[r]
        orow = out[r]
        for j in range(ar.size):
            orow[j] = half * (ar[j] + bias[j])


@njit(cache=True, nogil=True)
def sigmoid_from_tanh(t, out):
    """``out = 0.5 * t + 0.5`` with ``t = tanh(z / 2)``, i.e. ``sigmoid(z)`` (``out`` may be ``t``)."""
    half = np.float32(0.5)
    for r in range(t.shape[0]):
        tr = t[r]
        orow = out[r]
        for j in range(tr.size):
            orow[j] = half * tr[j] + half


@njit(cache=True, nogil=True)
def sigmoid_from_tanh_sample(t, u, out_p, out_s):
    """``p = 0.5 * t + 0.5``; ``out_p = p``; ``out_s = 1 if u < p else 0`` (Bernoulli(p) for ``u``
    uniform on [0, 1): p = 0 never fires, p = 1 always does).  Any of the outputs may be ``t``;
    when ``out_p`` is ``out_s`` the sample is what remains."""
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for r in range(t.shape[0]):
        tr = t[r]
        ur = u[r]
        pr = out_p[r]
        sr = out_s[r]
        for j in range(tr.size):
            p = half * tr[j] + half
            pr[j] = p
            sr[j] = one if ur[j] < p else zero


@njit(cache=True, nogil=True)
def add_row_bias_half(a, bias, out):
    """``out[j, n] = 0.5 * (a[j, n] + bias[j])``: :func:`add_bias_half` for the hidden units' arrays,
    which the layer keeps unit-major (H, N) (``out`` may be ``a``)."""
    half = np.float32(0.5)
    for j in range(a.shape[0]):
        aj = a[j]
        oj = out[j]
        bj = bias[j]
        for n in range(aj.size):
            oj[n] = half * (aj[n] + bj)


@njit(cache=True, nogil=True)
def sigmoid_from_tanh_t(t, out):
    """``out[n, j] = 0.5 * t[j, n] + 0.5``: probabilities from unit-major ``t`` (H, N) into an
    item-major top (N, H)."""
    half = np.float32(0.5)
    for j in range(t.shape[0]):
        tj = t[j]
        for n in range(tj.size):
            out[n, j] = half * tj[n] + half


@njit(cache=True, nogil=True)
def sigmoid_from_tanh_sample_t(t, u, out_p, out_s):
    """:func:`sigmoid_from_tanh_sample` on unit-major arrays: ``t``, ``out_p`` and ``out_s`` are
    (H, N) and the uniforms ``u`` item-major (N, H), so unit j of item n compares ``u[n, j]``
    whatever the layout (the draws are those of the item-major form)."""
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for j in range(t.shape[0]):
        tj = t[j]
        pj = out_p[j]
        sj = out_s[j]
        for n in range(tj.size):
            p = half * tj[n] + half
            pj[n] = p
            sj[n] = one if u[n, j] < p else zero


@njit(cache=True, nogil=True)
def hidden_data_t(t, top, out_neg):
    """Data-driven hidden probabilities from unit-major ``t = tanh(z / 2)`` (H, N): ``top[n, j] = p``
    (the layer's item-major top) and ``out_neg[j, n] = -p`` (the positive statistics, negated for
    the gradient product)."""
    half = np.float32(0.5)
    for j in range(t.shape[0]):
        tj = t[j]
        nj = out_neg[j]
        for n in range(tj.size):
            p = half * tj[n] + half
            top[n, j] = p
            nj[n] = -p


@njit(cache=True, nogil=True)
def hidden_data_sample_t(t, u, top, out_neg, out_s):
    """:func:`hidden_data_t` plus the sample that starts a CD chain: ``out_s[j, n] = 1 if u[n, j] < p
    else 0`` (``u`` item-major (N, H), ``out_s`` unit-major)."""
    half = np.float32(0.5)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for j in range(t.shape[0]):
        tj = t[j]
        nj = out_neg[j]
        sj = out_s[j]
        for n in range(tj.size):
            p = half * tj[n] + half
            top[n, j] = p
            nj[n] = -p
            sj[n] = one if u[n, j] < p else zero


@njit(cache=True, nogil=True)
def copy_min_max(x, out):
    """``out[...] = x`` (2-D, same shape) and return ``(min, max)`` of ``x`` (NaN if any is NaN)."""
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    nan = False
    for r in range(x.shape[0]):
        xr = x[r]
        orow = out[r]
        for j in range(xr.size):
            v = xr[j]
            orow[j] = v
            if np.isnan(v):
                nan = True
            lo = min(lo, v)
            hi = max(hi, v)
    if nan:
        return np.float32(np.nan), np.float32(np.nan)
    return lo, hi


@njit(cache=True, nogil=True)
def add_scaled(x, alpha, out):
    """``out += alpha * x`` (1-D, same size): a parameter diff accumulating a statistic."""
    for i in range(out.size):
        out[i] = out[i] + alpha * x[i]


@njit(cache=True, nogil=True)
def signed_column_sums_add(a, split, alpha, scratch, out):
    """``out[j] += alpha * (sum_{r >= split} a[r, j] - sum_{r < split} a[r, j])``.

    ``a`` is 2-D (R, J), ``out`` (J,); ``scratch`` is a float64 work array of at least J values
    (the sums run in float64 before one float32 rounding).  ``split = 0``: a plain scaled
    column sum.
    """
    cols = a.shape[1]
    for j in range(cols):
        scratch[j] = 0.0
    for r in range(a.shape[0]):
        ar = a[r]
        if r < split:
            for j in range(cols):
                scratch[j] -= ar[j]
        else:
            for j in range(cols):
                scratch[j] += ar[j]
    for j in range(cols):
        out[j] = out[j] + np.float32(alpha * scratch[j])


@njit(cache=True, nogil=True)
def row_sums_add(a, alpha, out):
    """``out[j] += alpha * sum_n a[j, n]`` (``a`` 2-D (J, N), ``out`` (J,)); each sum runs in float64
    before one float32 rounding."""
    for j in range(a.shape[0]):
        aj = a[j]
        s = 0.0
        for n in range(aj.size):
            s += aj[n]
        out[j] = out[j] + np.float32(alpha * s)


@njit(cache=True, nogil=True)
def free_energy_rows(x, pre, b, c, gaussian, out):
    """Free energy of each row of ``x`` (N, V), given ``pre = x W^T`` (N, H) without the bias.

    Bernoulli visible units: ``F(x) = -b.x - sum_j softplus(c_j + pre_j)``;
    Gaussian (unit variance): ``F(x) = 0.5 ||x - b||^2 - sum_j softplus(c_j + pre_j)``.
    ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` never overflows.  Accumulates in float64;
    ``out`` (N,) may be float32 or float64.
    """
    n_rows, V = x.shape
    H = pre.shape[1]
    for n in range(n_rows):
        xr = x[n]
        pr = pre[n]
        vis = 0.0
        if gaussian:
            for i in range(V):
                d = np.float64(xr[i]) - np.float64(b[i])
                vis += 0.5 * d * d
        else:
            for i in range(V):
                vis -= np.float64(xr[i]) * np.float64(b[i])
        hid = 0.0
        for j in range(H):
            z = np.float64(pr[j]) + np.float64(c[j])
            hid += max(z, 0.0) + np.log1p(np.exp(-abs(z)))
        out[n] = vis - hid


@njit(cache=True, nogil=True)
def squared_error_sum(x, r):
    """``sum((x - r)^2)`` over all elements (2-D, same shape), accumulated in float64."""
    s = 0.0
    for i in range(x.shape[0]):
        xr = x[i]
        rr = r[i]
        for j in range(xr.size):
            d = np.float64(xr[j]) - np.float64(rr[j])
            s += d * d
    return s

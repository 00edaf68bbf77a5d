"""Kernels of the contrastive-divergence step (RBM layer): sampling and statistics.

What is here and what is not, by measurement (batch 20, 500 hidden, 784 visible, 2 cores):

* The products ``x W^T``, ``h W`` and ``P^T Q`` go to BLAS through ``np.matmul(out=...)``
  (~135 us each; nothing written here comes close).
* The logistic function stays in NumPy (``0.5 * tanh(0.5 z) + 0.5`` over the whole array):
  NumPy's SIMD ``tanh``/``exp`` run 6-9 us per 10,000 values, a Numba loop 21 us, because
  Numba without SVML calls the scalar ``expf`` and does not vectorize it.
* Numba does what NumPy needs several passes or temporaries for: the Bernoulli draw
  (compare a uniform with the probability, write 0/1), accumulating a scaled product into a
  parameter diff in one pass, signed column sums for the bias diffs, row-wise free energies
  and squared errors with float64 accumulation.

Every kernel takes preallocated float32 arrays (outputs last), allocates nothing, and runs
serially: at these sizes a thread wake-up costs more than the loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def bernoulli_sample(p, u, out):
    """``out[i] = 1 if u[i] < p[i] else 0`` (1-D, same size; ``out`` may be ``u`` or ``p``).

    With ``u`` uniform on [0, 1) this draws Bernoulli(p): P(out = 1) = p exactly, so a
    probability of 0 never fires and a probability of 1 always does.
    """
    one = np.float32(1.0)
    zero = np.float32(0.0)
    for i in range(out.size):
        out[i] = one if u[i] < p[i] else zero


@njit(cache=True)
def add_scaled(x, alpha, out):
    """``out += alpha * x`` (1-D, same size): a parameter diff accumulating a statistic."""
    for i in range(out.size):
        out[i] = out[i] + alpha * x[i]


@njit(cache=True)
def signed_column_sums_add(a, split, alpha, out):
    """``out[j] += alpha * (sum_{r >= split} a[r, j] - sum_{r < split} a[r, j])``.

    ``a`` is 2-D (R, J), ``out`` (J,).  With ``split = 0`` this is a plain scaled column sum.
    Sums run in float64 (one per column) before the single float32 rounding.
    """
    rows, cols = a.shape
    for j in range(cols):
        s = 0.0
        for r in range(split):
            s -= a[r, j]
        for r in range(split, rows):
            s += a[r, j]
        out[j] = out[j] + np.float32(alpha * s)


@njit(cache=True)
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


@njit(cache=True)
def squared_error_sum(x, r):
    """``sum((x - r)^2)`` over all elements (1-D, same size), accumulated in float64."""
    s = 0.0
    for i in range(x.size):
        d = np.float64(x[i]) - np.float64(r[i])
        s += d * d
    return s

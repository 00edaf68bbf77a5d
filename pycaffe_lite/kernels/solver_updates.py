"""Solver update kernels: in place, float32, serial.

Every array argument is a 1-D contiguous float32 view of a parameter's data, diff or history
(``blob.diff.reshape(-1)``); every scalar is a ``np.float32`` the caller casts from the Python
float (double) it computed, so the arithmetic here is single precision throughout, like Caffe's
``Dtype = float`` code.  ``g`` is the gradient (the parameter diff), overwritten by the update
value that ``net.update()`` then subtracts from the data.  Operations keep the order Caffe's
BLAS-style calls imply (``h = (mu*h) + (lr*g)``, divide before scaling by the rate) so
results round the same way.

Serial loops: at these sizes (LeNet: 431k parameters) a ``prange`` costs more in thread
wake-ups than it saves (PERFORMANCE_NOTES: the whole update takes ~0.2 ms serially).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def scale_inplace(x, alpha):
    """``x *= alpha`` (Normalize by iter_size; gradient clipping)."""
    for i in range(x.size):
        x[i] = alpha * x[i]


@njit(cache=True)
def sumsq(x):
    """Sum of squares of ``x``, accumulated in float64 (for the global gradient norm)."""
    s = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        s += v * v
    return s


@njit(cache=True)
def l2_regularize(w, g, local_decay):
    """``g += local_decay * w`` (L2 weight decay)."""
    for i in range(g.size):
        g[i] = g[i] + local_decay * w[i]


@njit(cache=True)
def l1_regularize(w, g, local_decay):
    """``g += local_decay * sign(w)``, with ``sign(0) = 0`` (L1 weight decay)."""
    zero = np.float32(0.0)
    for i in range(g.size):
        wi = w[i]
        if wi > zero:
            g[i] = g[i] + local_decay
        elif wi < zero:
            g[i] = g[i] - local_decay


@njit(cache=True)
def sgd_update(g, h, momentum, local_rate):
    """``h = momentum*h + local_rate*g;  g = h``."""
    for i in range(g.size):
        v = momentum * h[i] + local_rate * g[i]
        h[i] = v
        g[i] = v


@njit(cache=True)
def nesterov_update(g, h, momentum, local_rate):
    """``h_new = momentum*h + local_rate*g;  g = (1+momentum)*h_new - momentum*h_old``."""
    one_plus = np.float32(1.0) + momentum
    for i in range(g.size):
        h_old = h[i]
        h_new = momentum * h_old + local_rate * g[i]
        h[i] = h_new
        g[i] = one_plus * h_new - momentum * h_old


@njit(cache=True)
def adagrad_update(g, h, delta, local_rate):
    """``h += g^2;  g = local_rate * g / (sqrt(h) + delta)``."""
    for i in range(g.size):
        gi = g[i]
        hi = h[i] + gi * gi
        h[i] = hi
        g[i] = local_rate * (gi / (np.sqrt(hi) + delta))


@njit(cache=True)
def rmsprop_update(g, h, rms_decay, delta, local_rate):
    """``h = rms_decay*h + (1-rms_decay)*g^2;  g = local_rate * g / (sqrt(h) + delta)``."""
    keep = np.float32(1.0) - rms_decay
    for i in range(g.size):
        gi = g[i]
        hi = rms_decay * h[i] + keep * (gi * gi)
        h[i] = hi
        g[i] = local_rate * (gi / (np.sqrt(hi) + delta))


@njit(cache=True)
def adadelta_update(g, h_grad, h_upd, momentum, delta, local_rate):
    """AdaDelta with decay ``momentum``; ``h_grad`` holds squared gradients, ``h_upd`` squared updates.

    ``h_grad = m*h_grad + (1-m)*g^2;  u = g * sqrt((h_upd + delta) / (h_grad + delta));
    h_upd = m*h_upd + (1-m)*u^2;  g = local_rate * u``.  (Caffe takes the square root of the
    ratio rather than dividing two roots; the same value, rounded once less.)
    """
    keep = np.float32(1.0) - momentum
    for i in range(g.size):
        gi = g[i]
        hg = momentum * h_grad[i] + keep * (gi * gi)
        h_grad[i] = hg
        u = gi * np.sqrt((h_upd[i] + delta) / (hg + delta))
        h_upd[i] = momentum * h_upd[i] + keep * (u * u)
        g[i] = local_rate * u


@njit(cache=True)
def adam_update(g, m, v, beta1, beta2, eps_hat, step_size):
    """Adam: ``m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  g = step_size * m / (sqrt(v) + eps_hat)``.

    ``step_size = local_rate * sqrt(1 - b2^t) / (1 - b1^t)`` (bias correction) comes from the caller.
    """
    keep1 = np.float32(1.0) - beta1
    keep2 = np.float32(1.0) - beta2
    for i in range(g.size):
        gi = g[i]
        mi = beta1 * m[i] + keep1 * gi
        vi = beta2 * v[i] + keep2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        g[i] = step_size * (mi / (np.sqrt(vi) + eps_hat))

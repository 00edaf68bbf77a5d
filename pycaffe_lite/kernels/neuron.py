"""Element-wise neuron kernels over flat (1-D, contiguous) float32 views.

ReLU as Caffe defines it, NaN passing through as in Caffe's ``std::max``/``std::min`` form:

* forward:  ``y = max(x, 0) + negative_slope * min(x, 0)``
* backward: ``dx = dy * ((x > 0) + negative_slope * (x <= 0))``

A plain loop here ran 3-7x faster than ``np.maximum(x, 0, out=y)`` and 2-3x faster than
``dy * (x > 0)`` (benchmarks/peers.py --sections layers; LeNet relu1 and CIFAR-10 quick shapes,
one thread): NumPy's float32 maximum does not vectorise, and the mask costs a pass.  Serial on
purpose: the arrays are memory-bound and small enough that a parallel region costs more than
it saves.  A layer running in place calls the ``_inplace`` forms: with one array LLVM vectorises
the loop, while two arguments that turn out to be the same array send it to its scalar fallback
(3x slower, CIFAR-10 quick relu1).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def relu_forward(x, negative_slope, out_y):
    """``out_y[i] = x[i] if x[i] >= 0 else negative_slope * x[i]`` (0 when the slope is 0)."""
    zero = np.float32(0.0)
    slope = np.float32(negative_slope)
    if slope == zero:  # max(x, 0): exactly 0.0 for negative x, never -0.0
        for i in range(x.size):
            v = x[i]
            out_y[i] = zero if v < zero else v  # noqa: FURB136  (not max(): NaN must pass through)
    else:
        for i in range(x.size):
            v = x[i]
            out_y[i] = v * slope if v < zero else v


@njit(cache=True)
def relu_backward(x, top_diff, negative_slope, out_bottom_diff):
    """``out_bottom_diff[i] = top_diff[i] * (1 if x[i] > 0 else negative_slope)``."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    slope = np.float32(negative_slope)
    for i in range(x.size):
        out_bottom_diff[i] = top_diff[i] * (one if x[i] > zero else slope)


@njit(cache=True)
def relu_forward_inplace(x, negative_slope):
    """:func:`relu_forward` with ``out_y`` = ``x``."""
    zero = np.float32(0.0)
    slope = np.float32(negative_slope)
    if slope == zero:
        for i in range(x.size):
            v = x[i]
            x[i] = zero if v < zero else v  # noqa: FURB136  (not max(): NaN must pass through)
    else:
        for i in range(x.size):
            v = x[i]
            x[i] = v * slope if v < zero else v


@njit(cache=True)
def relu_backward_inplace(x, negative_slope, diff):
    """:func:`relu_backward` with ``top_diff`` = ``out_bottom_diff`` = ``diff``."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    slope = np.float32(negative_slope)
    for i in range(x.size):
        diff[i] = diff[i] * (one if x[i] > zero else slope)

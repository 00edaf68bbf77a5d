"""Softmax and softmax-with-loss kernels over flat (1-D, contiguous) float32 views.

Every array is the C-order flattening of Caffe's ``(outer, channels, inner)`` layout: element
``(o, c, j)`` sits at ``(o * channels + c) * inner + j``, and the label of position ``(o, j)`` at
``o * inner + j``.  Caffe's formulas:

* softmax: ``p_c = exp(x_c - max_k x_k) / sum_k exp(x_k - max_k x_k)`` along ``channels`` (the max
  is subtracted so ``exp`` cannot overflow; it cancels);
* loss: ``-sum_valid log(max(p_label, FLT_MIN)) / normalizer``, summed in float32 in Caffe's order
  (outer, then inner), so the printed loss matches Caffe's to the last digit;
* loss gradient: ``dx = (p - onehot(label)) * loss_weight / normalizer``, 0 where ignored.

The loss forward is three calls: :func:`softmax_loss_forward` (softmax, label checks and the
picked probability of every position), NumPy's ``np.log`` on those, then :func:`softmax_loss_sum`.
The logarithm stays NumPy's on purpose: NumPy's float32 ``log`` (SIMD) and the C library's
``logf`` that Numba calls differ in the last bit for about one value in five, and the loss must
equal the one a float32 NumPy loop computes from the same probabilities
(tests/layers/test_loss.py::test_softmax_loss_sums_in_caffes_float32_order).

The exponentials are summed in float64 (the probabilities then sum to 1 within float32 rounding
for any ``channels``); everything stored is float32.  Serial on purpose: a loss layer holds a few
thousand values, fewer than a parallel region pays for.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: smallest positive normal float32; -log(p) is taken of max(p, FLT_MIN) as in Caffe
FLT_MIN = np.float32(np.finfo(np.float32).tiny)

#: ``ignore_label`` value meaning "no ignore_label": outside int32, where the proto field lives
NO_IGNORE_LABEL = -(2**63)

#: labels at or beyond this magnitude (and NaN) are out of range whatever the class count; it
#: keeps the float -> int64 conversion defined
_LABEL_LIMIT = 2.0**62

#: loss normalization modes, LossParameter's enum values (FULL, VALID, BATCH_SIZE, NONE)
FULL, VALID, BATCH_SIZE, NONE = 0, 1, 2, 3


@njit(cache=True, inline="always")  # inlined: as a call it cost ~14 ns a row, a third of the work
def _softmax_row(x, base, channels, inner, out_p):
    """Softmax of the ``channels`` values at ``base + c * inner`` of ``x`` into ``out_p``.

    Reads every input before writing the matching output, so ``out_p`` may be ``x``.
    """
    if channels == 0:  # nothing to normalise (and no x[base] to read)
        return
    end = base + channels * inner
    m = x[base]
    for k in range(base + inner, end, inner):
        v = x[k]
        if v > m:  # noqa: PLR1730  (not max(): one NaN anywhere in the row must reach every p)
            m = v
    total = np.float64(0.0)  # float64 also without the JIT, where 0.0 + float32 is float32
    for k in range(base, end, inner):
        e = np.exp(x[k] - m)
        out_p[k] = e
        total += e
    scale = 1.0 / total
    for k in range(base, end, inner):
        out_p[k] = np.float32(out_p[k] * scale)


@njit(cache=True)
def softmax_forward(x, outer, channels, inner, out_y):
    """Softmax along ``channels`` of the ``(outer, channels, inner)`` array ``x`` into ``out_y``
    (which may be ``x``)."""
    for o in range(outer):
        for j in range(inner):
            _softmax_row(x, o * channels * inner + j, channels, inner, out_y)


@njit(cache=True)
def softmax_backward(y, top_diff, outer, channels, inner, out_bottom_diff):
    """``dx_c = (dy_c - sum_k dy_k y_k) * y_c`` along ``channels`` (``out_bottom_diff`` may be
    ``top_diff``)."""
    for o in range(outer):
        for j in range(inner):
            base = o * channels * inner + j
            dot = np.float32(0.0)
            for c in range(channels):
                k = base + c * inner
                dot += top_diff[k] * y[k]
            for c in range(channels):
                k = base + c * inner
                out_bottom_diff[k] = (top_diff[k] - dot) * y[k]


@njit(cache=True)
def softmax_loss_forward(x, label, outer, channels, inner, ignore_label, out_prob, out_picked):
    """Softmax of ``x`` into ``out_prob`` and, per position ``(o, j)``, the probability of its
    label (at least FLT_MIN) into ``out_picked[o * inner + j]``; ``+inf`` where the label equals
    ``ignore_label`` (:data:`NO_IGNORE_LABEL`: none), which ``log`` keeps ``+inf`` and
    :func:`softmax_loss_sum` skips (a real probability is at most 1, or NaN).

    Labels are float32, truncated toward zero like a C cast.  Returns the flat index of the first
    label outside ``[0, channels)`` that is not ignored, or -1; the probabilities are complete
    either way.
    """
    bad = -1
    for o in range(outer):
        for j in range(inner):
            base = o * channels * inner + j
            _softmax_row(x, base, channels, inner, out_prob)
            i = o * inner + j
            value = label[i]
            if not (-_LABEL_LIMIT < value < _LABEL_LIMIT):  # also NaN
                if bad < 0:
                    bad = i
                out_picked[i] = np.inf
                continue
            lab = np.int64(value)
            if lab == ignore_label:
                out_picked[i] = np.inf
            elif lab < 0 or lab >= channels:
                if bad < 0:
                    bad = i
                out_picked[i] = np.inf
            else:
                p = out_prob[base + lab * inner]
                out_picked[i] = FLT_MIN if p < FLT_MIN else p  # noqa: FURB136  (NaN stays NaN, as in Caffe)
    return bad


@njit(cache=True)
def softmax_loss_sum(log_picked, outer, inner, mode, out_loss, out_normalizer):
    """``out_loss[()] = -sum log_picked / normalizer`` over the finite entries (``+inf`` marks an
    ignored label), summed in float32 in order; the normalizer (FULL: outer * inner, VALID: the
    count of summed entries, BATCH_SIZE: outer, NONE: 1; at least 1) goes to
    ``out_normalizer[0]``."""
    loss = np.float32(0.0)
    valid = 0
    for i in range(log_picked.size):
        v = log_picked[i]
        if v != np.inf:
            loss -= v
            valid += 1
    if mode == FULL:
        n = outer * inner
    elif mode == VALID:
        n = valid
    elif mode == BATCH_SIZE:
        n = outer
    else:
        n = 1
    normalizer = np.float32(max(1, n))
    out_normalizer[0] = normalizer
    out_loss[()] = loss / normalizer


@njit(cache=True)
def softmax_loss_backward(prob, label, outer, channels, inner, ignore_label, scale, out_bottom_diff):
    """``dx = (p - onehot(label)) * scale`` (``scale`` = loss_weight / normalizer), 0 over every
    channel of a position whose label is ``ignore_label``.  Labels were checked by the forward
    pass; one outside ``[0, channels)`` here just subtracts nothing."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    s = np.float32(scale)
    for o in range(outer):
        for j in range(inner):
            base = o * channels * inner + j
            value = label[o * inner + j]
            in_range = -_LABEL_LIMIT < value < _LABEL_LIMIT
            lab = np.int64(value) if in_range else -1
            if in_range and lab == ignore_label:
                for c in range(channels):
                    out_bottom_diff[base + c * inner] = zero
            else:
                for c in range(channels):
                    k = base + c * inner
                    v = prob[k]
                    if c == lab:
                        v -= one
                    out_bottom_diff[k] = v * s

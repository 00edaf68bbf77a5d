"""Loss layers: SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss.

Shared conventions (Caffe's LossLayer):

* the loss is a scalar top (shape ``()``) with loss_weight 1 unless the prototxt
  gives another; the weight reaches backward as ``top[0].diff.flat[0]``;
* the two bottoms must have the same first dimension;
* labels never take a gradient (``allow_force_backward(1)`` is False, and asking
  for one is a config error), except for EuclideanLoss where both are data;
* sums are accumulated in float32, in Caffe's order, so the loss Caffe prints is
  reproduced to the last digit.
"""

from __future__ import annotations

import numpy as np

from ..blob import Blob
from ..errors import DataError
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer
from .neuron import SigmoidLayer
from .softmax import SoftmaxLayer

FULL = caffe_pb2.LossParameter.FULL
VALID = caffe_pb2.LossParameter.VALID
BATCH_SIZE = caffe_pb2.LossParameter.BATCH_SIZE
NONE = caffe_pb2.LossParameter.NONE

#: smallest positive normal float32; -log(p) is taken of max(p, FLT_MIN)
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def get_normalizer(mode: int, outer_num: int, inner_num: int, valid_count: int) -> np.float32:
    """Caffe's loss normalizer, never below 1 (a batch with every label ignored gives 0 loss).

    FULL: outer*inner; VALID: the count of non-ignored labels (``-1``: all);
    BATCH_SIZE: outer; NONE: 1.
    """
    if mode == FULL:
        n = outer_num * inner_num
    elif mode == VALID:
        n = outer_num * inner_num if valid_count == -1 else valid_count
    elif mode == BATCH_SIZE:
        n = outer_num
    elif mode == NONE:
        n = 1
    else:
        raise ValueError(f"unknown loss normalization mode {mode}")
    return np.float32(max(1.0, float(n)))


def sequential_sum(values: np.ndarray) -> np.float32:
    """Sum float32 values one after another, in order, as Caffe's CPU loops do."""
    if values.size == 0:
        return np.float32(0)
    return np.cumsum(values.ravel(), dtype=np.float32)[-1]


class LossLayer(Layer):
    """Base of the loss layers: two bottoms (prediction, target), a scalar loss top."""

    exact_num_bottom = 2
    min_num_top = 1
    max_num_top = 1
    is_loss = True

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def _bottom_name(self, bottom, i: int) -> str:
        if i < len(self.layer_param.bottom):
            return f"bottom[{i}] '{self.layer_param.bottom[i]}'"
        return f"bottom[{i}] '{bottom[i].name}'" if bottom[i].name else f"bottom[{i}]"

    def _both_shapes(self, bottom) -> str:
        return (
            f"{self._bottom_name(bottom, 0)} has shape {bottom[0].shape} and "
            f"{self._bottom_name(bottom, 1)} has shape {bottom[1].shape}"
        )

    def reshape(self, bottom, top) -> None:
        a, b = bottom[0].shape, bottom[1].shape
        if not a or not b or a[0] != b[0]:
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the data and the labels must have the same first dimension"
            )
        top[0].reshape(())

    def _normalization(self, default: int) -> int:
        """``normalization`` if given, else legacy ``normalize`` (true: VALID, false:
        BATCH_SIZE), else the layer's ``default``."""
        param = self.layer_param.loss_param
        if param.HasField("normalization"):
            return param.normalization
        if param.HasField("normalize"):
            return VALID if param.normalize else BATCH_SIZE
        return default

    def _no_label_gradient(self, propagate_down) -> None:
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.config_error("cannot backpropagate to the label input (bottom[1])")


def _internal_param(layer_param, type_name: str, copy_field: str | None = None):
    """A LayerParameter for a layer used inside another (same name, no loss weight)."""
    param = caffe_pb2.LayerParameter(name=layer_param.name, type=type_name, phase=layer_param.phase)
    if copy_field:
        getattr(param, copy_field).CopyFrom(getattr(layer_param, copy_field))
    return param


@register_layer("SoftmaxWithLoss", v1="SOFTMAX_LOSS")
class SoftmaxWithLossLayer(LossLayer):
    """Softmax followed by the multinomial logistic loss, fused for a stable gradient.

    Bottom: x (..., C, ...) scores, C along ``softmax_param.axis`` (default 1);
    labels with outer*inner values (outer = the dims before the axis, inner = after),
    integers in [0, C) or ``loss_param.ignore_label``.
    Top: loss (scalar); optional second top: the probabilities p, shaped like x.
    No blobs.
    Forward: p = softmax(x); loss = -sum_valid log(max(p_label, FLT_MIN)) / normalizer,
    normalizer from ``loss_param.normalization`` (default VALID: the number of
    non-ignored labels; legacy ``normalize: false`` means BATCH_SIZE), at least 1.
    Backward: dx = (p - onehot(label)) * loss_weight / normalizer, 0 at ignored positions.
    Reference: Bridle (1990); the loss is the cross-entropy of the softmax output.
    """

    max_num_top = 2

    def setup(self, bottom, top) -> None:
        param = self.layer_param.loss_param
        self.has_ignore_label = param.HasField("ignore_label")
        self.ignore_label = int(param.ignore_label)
        self.normalization = self._normalization(VALID)
        self.prob = Blob(name=f"{self.name}.prob")
        self.softmax = SoftmaxLayer(_internal_param(self.layer_param, "Softmax", "softmax_param"), self.where)
        self.softmax.set_up([bottom[0]], [self.prob])
        self.normalizer = np.float32(1)

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.softmax.reshape([bottom[0]], [self.prob])
        axis = self.softmax.axis
        self.outer = bottom[0].count(0, axis)
        self.inner = bottom[0].count(axis + 1)
        if self.outer * self.inner != bottom[1].count():
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the number of labels must equal the number of "
                f"predictions: with softmax axis {axis} and prediction shape {bottom[0].shape} "
                f"there must be {self.outer * self.inner} labels (every dimension except the axis), "
                f"integers in [0, {bottom[0].shape[axis]})"
            )
        if len(top) >= 2:
            top[1].reshape_like(bottom[0])
            top[1].share_data(self.prob)

    def forward(self, bottom, top) -> None:
        self.softmax.forward([bottom[0]], [self.prob])
        if len(top) >= 2:
            top[1].share_data(self.prob)
        channels = self.softmax.channels
        label = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)  # truncates like a C cast
        valid = label != self.ignore_label if self.has_ignore_label else None
        checked = label[valid] if valid is not None else label
        if checked.size and (checked.min() < 0 or checked.max() >= channels):
            bad = checked[(checked < 0) | (checked >= channels)][0]
            raise DataError(
                f"{self.describe()}: label {bad} is out of range for {channels} classes "
                f"(labels must be integers in [0, {channels})"
                + (f" or the ignore_label {self.ignore_label})" if self.has_ignore_label else ")")
            )
        if valid is not None:
            label = np.where(valid, label, 0)
        # Flat index of p[o, label[o, j], j] in the (outer, C, inner) probabilities.
        o = np.arange(self.outer)[:, None] * (channels * self.inner)
        j = np.arange(self.inner)[None, :]
        index = o + label * self.inner + j
        if valid is not None:
            index = index[valid]
        self._label_index = index.ravel()
        self._valid = valid
        p = self.prob.data.reshape(-1)[self._label_index]
        log_p = np.log(np.maximum(p, FLT_MIN))
        valid_count = self._label_index.size
        self.normalizer = get_normalizer(self.normalization, self.outer, self.inner, valid_count)
        top[0].data[...] = sequential_sum(-log_p) / self.normalizer

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        np.copyto(dx, self.prob.data)
        flat = dx.reshape(-1)
        flat[self._label_index] -= 1
        if self._valid is not None and not self._valid.all():
            dx3 = dx.reshape(self.outer, -1, self.inner)
            dx3 *= self._valid[:, None, :]
        dx *= np.float32(top[0].diff.flat[0] / self.normalizer)


@register_layer("EuclideanLoss", v1="EUCLIDEAN_LOSS")
class EuclideanLossLayer(LossLayer):
    """Half the mean squared distance over the batch.

    Bottom: a (N, ...) and b (N, ...) with the same count per item (count(1)).
    Top: loss (scalar).  No blobs.
    Forward: loss = sum((a - b)^2) / (2 N), N = a.shape[0].
    Backward: da = loss_weight (a - b) / N;  db = -loss_weight (a - b) / N (both
    bottoms can take a gradient, so either may be the learned one).
    Reference: least squares (Gauss, 1809).
    """

    def allow_force_backward(self, bottom_index: int) -> bool:
        return True

    def setup(self, bottom, top) -> None:
        self._diff: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        if bottom[0].count(1) != bottom[1].count(1):
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the inputs must have the same dimension "
                f"(count after the first axis: {bottom[0].count(1)} vs {bottom[1].count(1)})"
            )
        if self._diff is None or self._diff.shape != bottom[0].shape:
            self._diff = np.empty(bottom[0].shape, np.float32)

    def forward(self, bottom, top) -> None:
        diff = self._diff
        np.subtract(bottom[0].data, bottom[1].data.reshape(diff.shape), out=diff)
        flat = diff.reshape(-1)
        dot = np.dot(flat, flat)  # float32 BLAS dot, like caffe_cpu_dot
        top[0].data[...] = np.float32(dot) / np.float32(bottom[0].shape[0]) / np.float32(2)

    def backward(self, top, propagate_down, bottom) -> None:
        for i, sign in ((0, 1.0), (1, -1.0)):
            if i < len(propagate_down) and propagate_down[i]:
                alpha = np.float32(sign * top[0].diff.flat[0] / bottom[i].shape[0])
                np.multiply(self._diff.reshape(bottom[i].shape), alpha, out=bottom[i].diff)


@register_layer("SigmoidCrossEntropyLoss", v1="SIGMOID_CROSS_ENTROPY_LOSS")
class SigmoidCrossEntropyLossLayer(LossLayer):
    """Sigmoid followed by the binary cross-entropy, fused for numerical stability.

    Bottom: x (N, ...) scores; t targets with the same count, in [0, 1] (or
    ``loss_param.ignore_label``).  Top: loss (scalar).  No blobs.
    Forward: loss = -sum_valid [x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))] / normalizer,
    which equals -sum [t log s(x) + (1 - t) log(1 - s(x))] without overflow.
    Normalizer: ``loss_param.normalization`` if given, legacy ``normalize`` (true:
    VALID, false: BATCH_SIZE) otherwise, else BATCH_SIZE. Caffe's default here differs
    from SoftmaxWithLoss's (VALID) and is kept for compatibility (BVLC PR #4986).
    Backward: dx = (s(x) - t) * loss_weight / normalizer, 0 where t is ignored.
    """

    def setup(self, bottom, top) -> None:
        param = self.layer_param.loss_param
        self.has_ignore_label = param.HasField("ignore_label")
        self.ignore_label = int(param.ignore_label)
        self.normalization = self._normalization(BATCH_SIZE)
        self.sigmoid_output = Blob(name=f"{self.name}.sigmoid")
        self.sigmoid = SigmoidLayer(_internal_param(self.layer_param, "Sigmoid", "sigmoid_param"), self.where)
        self.sigmoid.set_up([bottom[0]], [self.sigmoid_output])
        self.normalizer = np.float32(1)
        self._valid = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.outer = bottom[0].shape[0]
        self.inner = bottom[0].count(1)
        if bottom[0].count() != bottom[1].count():
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the inputs must have the same count "
                f"({bottom[0].count()} vs {bottom[1].count()})"
            )
        self.sigmoid.reshape([bottom[0]], [self.sigmoid_output])

    def forward(self, bottom, top) -> None:
        self.sigmoid.forward([bottom[0]], [self.sigmoid_output])
        x = bottom[0].data.reshape(-1)
        t = bottom[1].data.reshape(-1)
        positive = (x >= 0).astype(np.float32)
        # log(1 + exp(-|x|)) written as Caffe does, x - 2x[x >= 0] = -|x|.
        terms = x * (t - positive) - np.log(np.float32(1) + np.exp(x - np.float32(2) * x * positive))
        valid = None
        if self.has_ignore_label:
            valid = t.astype(np.int64) != self.ignore_label  # truncates like a C cast
            terms = terms[valid]
        self._valid = valid
        self.normalizer = get_normalizer(self.normalization, self.outer, self.inner, terms.size)
        top[0].data[...] = sequential_sum(-terms) / self.normalizer

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        np.subtract(self.sigmoid_output.data, bottom[1].data.reshape(dx.shape), out=dx)
        if self._valid is not None:
            dx *= self._valid.reshape(dx.shape)
        dx *= np.float32(top[0].diff.flat[0] / self.normalizer)

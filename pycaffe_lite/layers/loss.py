"""Loss layers: SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss,
MultinomialLogisticLoss, InfogainLoss, ContrastiveLoss.

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
from ..kernels.softmax_loss import (
    NO_IGNORE_LABEL,
    softmax_loss_backward,
    softmax_loss_forward,
    softmax_loss_sum,
)
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer
from .neuron import SigmoidLayer, _scratch
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
        # the kernels' arguments that depend only on the parameters and shapes (set in reshape)
        self._ignore = self.ignore_label if self.has_ignore_label else NO_IGNORE_LABEL
        self._normalizer = np.ones(1, np.float32)
        self._shapes: tuple | None = None

    @property
    def normalizer(self) -> np.float32:
        """The last forward pass's normalizer (1 before any)."""
        return self._normalizer[0]

    def reshape(self, bottom, top) -> None:
        x_shape = bottom[0].shape
        # Unchanged shapes (every iteration of a net) need nothing: the probability storage,
        # its flat view and the second top's sharing all stay as the last full reshape left them.
        if (
            self._shapes == (x_shape, bottom[1].shape)
            and top[0].shape == ()
            and (len(top) < 2 or (top[1] is self._prob_top and top[1].shape == x_shape))
        ):
            return
        super().reshape(bottom, top)
        self.softmax.reshape([bottom[0]], [self.prob])
        axis = self.softmax.axis
        self.outer = bottom[0].count(0, axis)
        self.channels = bottom[0].shape[axis]
        self.inner = bottom[0].count(axis + 1)
        if self.outer * self.inner != bottom[1].count():
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the number of labels must equal the number of "
                f"predictions: with softmax axis {axis} and prediction shape {bottom[0].shape} "
                f"there must be {self.outer * self.inner} labels (every dimension except the axis), "
                f"integers in [0, {bottom[0].shape[axis]})"
            )
        self._prob_top = None
        if len(top) >= 2:
            top[1].reshape_like(bottom[0])
            top[1].share_data(self.prob)
            self._prob_top = top[1]
        self._prob_flat = self.prob.data.reshape(-1)
        self._log_picked = np.empty(self.outer * self.inner, np.float32)
        self._shapes = (x_shape, bottom[1].shape)

    def forward(self, bottom, top) -> None:
        label = bottom[1].data.reshape(-1)
        picked = self._log_picked
        bad = softmax_loss_forward(
            bottom[0].data.reshape(-1), label, self.outer, self.channels, self.inner, self._ignore,
            self._prob_flat, picked,
        )
        if bad >= 0:
            raise self._label_error(label[bad])
        np.log(picked, out=picked)  # NumPy's log on purpose: see kernels/softmax_loss.py
        softmax_loss_sum(picked, self.outer, self.inner, self.normalization, top[0].data, self._normalizer)

    def _label_error(self, value: np.float32) -> DataError:
        # the integer the check saw (truncated like a C cast), or the value itself when it has none
        bad = int(value) if abs(value) < 2.0**62 else str(value)
        channels = self.channels
        return DataError(
            f"{self.describe()}: label {bad} is out of range for {channels} classes "
            f"(labels must be integers in [0, {channels})"
            + (f" or the ignore_label {self.ignore_label})" if self.has_ignore_label else ")")
        )

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        scale = top[0].diff.flat[0] / self._normalizer[0]  # float32, as Caffe's loss_weight / normalizer
        softmax_loss_backward(
            self._prob_flat, bottom[1].data.reshape(-1), self.outer, self.channels, self.inner, self._ignore,
            scale, bottom[0].diff.reshape(-1),
        )


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


#: Caffe's floor for probabilities whose log is taken by the probability-based losses
kLOG_THRESHOLD = np.float32(1e-20)

HINGE_L1 = caffe_pb2.HingeLossParameter.L1


def _class_labels(layer: Layer, label_blob: Blob, count: int, classes: int, where: str) -> np.ndarray:
    """The ``count`` labels as integers (truncated like a C cast), each in [0, classes)."""
    label = label_blob.data.reshape(-1).astype(np.int64)
    if label.size and (label.min() < 0 or label.max() >= classes):
        bad = label[(label < 0) | (label >= classes)][0]
        raise DataError(
            f"{layer.describe()}: label {bad} is out of range for {classes} {where} "
            f"(labels must be integers in [0, {classes}))"
        )
    return label


@register_layer("HingeLoss", v1="HINGE_LOSS")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge loss for classification (the multi-class SVM of an InnerProduct).

    Bottom: scores x (N, ...), K = count / N classes per item; labels (N values) in [0, K).
    Top: loss (scalar).  No blobs.
    With t_nk = +1 for the true class k = label_n and -1 otherwise, and
    m_nk = max(0, 1 - t_nk x_nk):
    Forward: loss = sum m / N (``norm: L1``, the default) or sum m^2 / N (``L2``).
    Backward: dx_nk = -t_nk [m_nk > 0] loss_weight / N (L1), -2 t_nk m_nk loss_weight / N (L2).
    Reference: one-vs-all linear SVMs on top of a net, as in Tang, "Deep Learning using
    Linear Support Vector Machines" (ICML 2013 workshop).
    """

    def setup(self, bottom, top) -> None:
        self.norm = self.layer_param.hinge_loss_param.norm
        self._margin = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.num = bottom[0].shape[0]
        self.dim = bottom[0].count() // max(self.num, 1)
        if bottom[1].count() != self.num:
            raise self.shape_error(f"{self._both_shapes(bottom)}: give one label per item ({self.num} labels)")
        self._margin = _scratch(self._margin, (self.num, self.dim))

    def forward(self, bottom, top) -> None:
        self.label = _class_labels(self, bottom[1], self.num, self.dim, "classes")
        rows = np.arange(self.num)
        m = self._margin
        np.copyto(m, bottom[0].data.reshape(self.num, self.dim))
        m[rows, self.label] *= np.float32(-1)  # t x with t = -1 for the wrong classes: 1 + (-t x)
        m += np.float32(1)
        np.maximum(m, 0, out=m)
        flat = m.reshape(-1)
        total = np.sum(flat, dtype=np.float32) if self.norm == HINGE_L1 else np.dot(flat, flat)
        top[0].data[...] = np.float32(total) / np.float32(self.num)

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.num, self.dim)
        scale = np.float32(top[0].diff.flat[0] / self.num)
        if self.norm == HINGE_L1:
            np.sign(self._margin, out=dx)
            dx *= scale
        else:
            np.multiply(self._margin, scale * np.float32(2), out=dx)
        dx[np.arange(self.num), self.label] *= np.float32(-1)


@register_layer("MultinomialLogisticLoss", v1="MULTINOMIAL_LOGISTIC_LOSS")
class MultinomialLogisticLossLayer(LossLayer):
    """Negative log-likelihood of the true class, from probabilities (e.g. a Softmax top).

    Bottom: p (N, ...), K = count / N probabilities per item; labels (N,) or (N, 1, 1, 1)
    in [0, K).  Top: loss (scalar).  No blobs.
    Forward: loss = -sum_n log(max(p_n,label_n, 1e-20)) / N.
    Backward: dp_n,label_n = -loss_weight / (N max(p_n,label_n, 1e-20)); 0 elsewhere.
    Prefer SoftmaxWithLoss on scores: its gradient is stable where p is tiny.
    """

    def setup(self, bottom, top) -> None:
        self._p = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.num = bottom[0].shape[0]
        self.dim = bottom[0].count() // max(self.num, 1)
        if bottom[1].count(1) != 1:
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the labels must be (N,) or (N, 1, 1, 1), one per item"
            )

    def forward(self, bottom, top) -> None:
        self.label = _class_labels(self, bottom[1], self.num, self.dim, "classes")
        p = bottom[0].data.reshape(self.num, self.dim)[np.arange(self.num), self.label]
        self._p = np.maximum(p, kLOG_THRESHOLD)
        top[0].data[...] = sequential_sum(-np.log(self._p)) / np.float32(self.num)

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        dx = bottom[0].diff.reshape(self.num, self.dim)
        dx[...] = 0
        scale = np.float32(-top[0].diff.flat[0] / self.num)
        dx[np.arange(self.num), self.label] = scale / self._p


@register_layer("InfogainLoss", v1="INFOGAIN_LOSS")
class InfogainLossLayer(LossLayer):
    """SoftmaxWithLoss weighted by an "information gain" matrix H over (true, predicted) pairs.

    Caffe 1.0's form (BVLC PR #3855): it takes scores and applies the softmax itself.
    Bottoms: scores x (..., K, ...) with K along ``infogain_loss_param.axis`` (default 1);
    labels, one per position outside the axis, in [0, K) or ``loss_param.ignore_label``;
    optionally H (K*K values) as a third bottom, else H is read from the BlobProto file
    ``infogain_loss_param.source`` (relative to the working folder, as in Caffe).
    Tops: loss (scalar); optional second top: the probabilities p, shaped like x.  No blobs.
    Forward: p = softmax(x); loss = -sum_valid sum_l H[label, l] log(max(p_l, 1e-20)) / normalizer
    (``loss_param.normalization``, default VALID; legacy ``normalize`` is refused, as in
    Caffe 1.0).  H = identity gives SoftmaxWithLoss.
    Backward: dx_l = (p_l sum_k H[label, k] - H[label, l]) * loss_weight / normalizer,
    0 at ignored positions; labels and H take no gradient.
    """

    exact_num_bottom = None
    min_num_bottom = 2
    max_num_bottom = 3
    max_num_top = 2

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0

    def setup(self, bottom, top) -> None:
        loss_param = self.layer_param.loss_param
        if loss_param.HasField("normalize"):
            raise self.config_error(
                "loss_param.normalize is not accepted by InfogainLoss (as in Caffe 1.0); use "
                "normalization: VALID (for normalize: true) or BATCH_SIZE (for false)"
            )
        self.normalization = loss_param.normalization
        self.has_ignore_label = loss_param.HasField("ignore_label")
        self.ignore_label = int(loss_param.ignore_label)
        softmax_param = _internal_param(self.layer_param, "Softmax")
        softmax_param.softmax_param.axis = self.layer_param.infogain_loss_param.axis
        self.prob = Blob(name=f"{self.name}.prob")
        self.softmax = SoftmaxLayer(softmax_param, self.where)
        self.softmax.set_up([bottom[0]], [self.prob])
        self.infogain: np.ndarray | None = None
        if len(bottom) < 3:
            self.infogain = self._read_infogain()
        self.normalizer = np.float32(1)

    def _read_infogain(self) -> np.ndarray:
        source = self.layer_param.infogain_loss_param.source
        if not source:
            raise self.config_error(
                "give the infogain matrix: infogain_loss_param { source: 'H.binaryproto' } or a third bottom"
            )
        try:
            with open(source, "rb") as f:
                proto = caffe_pb2.BlobProto.FromString(f.read())
        except OSError as e:
            raise DataError(f"{self.describe()}: cannot read the infogain matrix '{source}': {e.strerror}") from e
        except Exception as e:  # protobuf's DecodeError
            raise DataError(f"{self.describe()}: '{source}' is not a BlobProto file ({e})") from e
        blob = Blob(name=f"{self.name}.infogain")
        blob.from_proto(proto)
        return blob.data.copy()

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.softmax.reshape([bottom[0]], [self.prob])
        axis = self.softmax.axis
        self.outer = bottom[0].count(0, axis)
        self.inner = bottom[0].count(axis + 1)
        self.num_labels = bottom[0].shape[axis]
        if self.outer * self.inner != bottom[1].count():
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: with infogain axis {axis} there must be "
                f"{self.outer * self.inner} labels (every dimension of the scores except the axis)"
            )
        H = bottom[2].data if len(bottom) > 2 else self.infogain
        if H.size != self.num_labels ** 2:
            where = f"bottom[2] (shape {H.shape})" if len(bottom) > 2 else (
                f"'{self.layer_param.infogain_loss_param.source}' (shape {H.shape})")
            raise self.shape_error(
                f"the infogain matrix {where} has {H.size} values; {self.num_labels} classes need "
                f"{self.num_labels}x{self.num_labels}"
            )
        if len(top) >= 2:
            top[1].reshape_like(bottom[0])
            top[1].share_data(self.prob)

    def _matrix(self, bottom) -> np.ndarray:
        H = bottom[2].data if len(bottom) > 2 else self.infogain
        return H.reshape(self.num_labels, self.num_labels)

    def forward(self, bottom, top) -> None:
        self.softmax.forward([bottom[0]], [self.prob])
        if len(top) >= 2:
            top[1].share_data(self.prob)
        label = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)  # truncates like a C cast
        valid = label != self.ignore_label if self.has_ignore_label else np.ones(label.shape, bool)
        checked = label[valid]
        if checked.size and (checked.min() < 0 or checked.max() >= self.num_labels):
            bad = checked[(checked < 0) | (checked >= self.num_labels)][0]
            raise DataError(
                f"{self.describe()}: label {bad} is out of range for {self.num_labels} classes "
                f"(labels must be integers in [0, {self.num_labels})"
                + (f" or the ignore_label {self.ignore_label})" if self.has_ignore_label else ")")
            )
        self._label = np.where(valid, label, 0)
        self._valid = valid
        H = self._matrix(bottom)
        # (outer, inner, K) in Caffe's summation order: item, position, class.
        p = self.prob.data.reshape(self.outer, self.num_labels, self.inner).transpose(0, 2, 1)
        terms = H[self._label] * np.log(np.maximum(p, kLOG_THRESHOLD))
        self.normalizer = get_normalizer(self.normalization, self.outer, self.inner, int(valid.sum()))
        top[0].data[...] = sequential_sum(-terms[valid]) / self.normalizer

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.config_error("cannot backpropagate to the infogain matrix (bottom[2])")
        if not propagate_down[0]:
            return
        H = self._matrix(bottom)
        row_sum = H.sum(axis=1, dtype=np.float32)
        p = self.prob.data.reshape(self.outer, self.num_labels, self.inner)
        dx = bottom[0].diff.reshape(p.shape)
        # p_l * rowsum(H)[label] - H[label, l], laid out (outer, K, inner)
        np.multiply(p, row_sum[self._label][:, None, :], out=dx)
        dx -= H[self._label].transpose(0, 2, 1)
        dx *= self._valid[:, None, :]
        dx *= np.float32(top[0].diff.flat[0] / self.normalizer)


@register_layer("ContrastiveLoss", v1="CONTRASTIVE_LOSS")
class ContrastiveLossLayer(LossLayer):
    """Pull similar pairs together, push dissimilar ones at least ``margin`` apart (siamese nets).

    Bottoms: a (N, C) or (N, C, 1, 1), b of the same shape, and y (N values): similar
    where int(y) != 0.  Top: loss (scalar).  No blobs.
    With d = ||a - b||_2 per item and m = ``margin`` (default 1):
    Forward: loss = sum_n [y d^2 + (1 - y) max(m - d, 0)^2] / (2N); with
    ``legacy_version: true`` the dissimilar term is max(m - d^2, 0) (Caffe's original).
    Backward (a; b gets the opposite sign; w = loss_weight): similar w (a - b) / N;
    dissimilar -w (m - d) / (d + 1e-4) (a - b) / N where m > d (Caffe's 1e-4 keeps d = 0
    finite), legacy -w (a - b) / N where m > d^2; y takes no gradient.
    Reference: Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
    Mapping" (CVPR 2006).
    """

    exact_num_bottom = 3

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def setup(self, bottom, top) -> None:
        param = self.layer_param.contrastive_loss_param
        self.margin = np.float32(param.margin)
        self.legacy_version = bool(param.legacy_version)
        self._diff = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        a, b, y = bottom
        if a.shape != b.shape or a.num_axes < 2 or any(d != 1 for d in a.shape[2:]):
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: the two features must have one shape, (N, C) or (N, C, 1, 1)"
            )
        if y.count() != a.shape[0] or y.count(1) != 1:
            raise self.shape_error(
                f"{self._bottom_name(bottom, 2)} has shape {y.shape}; the similarity needs one value per "
                f"pair, (N,) or (N, 1, 1, 1) with N = {a.shape[0]}"
            )
        self.num, self.channels = a.shape[0], a.shape[1]
        self._diff = _scratch(self._diff, (self.num, self.channels))

    def forward(self, bottom, top) -> None:
        diff = np.subtract(bottom[0].data.reshape(self._diff.shape), bottom[1].data.reshape(self._diff.shape),
                           out=self._diff)
        self.dist_sq = np.einsum("ij,ij->i", diff, diff)
        self.similar = bottom[2].data.reshape(-1).astype(np.int64) != 0  # int cast, as in Caffe
        if self.legacy_version:
            dissimilar = np.maximum(self.margin - self.dist_sq, np.float32(0))
        else:
            dissimilar = np.square(np.maximum(self.margin - np.sqrt(self.dist_sq), np.float32(0)))
        terms = np.where(self.similar, self.dist_sq, dissimilar)
        top[0].data[...] = sequential_sum(terms) / np.float32(self.num) / np.float32(2)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[2]:
            raise self.config_error("cannot backpropagate to the similarity labels (bottom[2])")
        if not (propagate_down[0] or propagate_down[1]):
            return
        alpha = np.float32(top[0].diff.flat[0] / self.num)
        if self.legacy_version:
            factor = np.where(self.margin - self.dist_sq > 0, -alpha, np.float32(0))
        else:
            dist = np.sqrt(self.dist_sq)
            mdist = self.margin - dist
            factor = np.where(mdist > 0, -alpha * mdist / (dist + np.float32(1e-4)), np.float32(0))
        factor = np.where(self.similar, alpha, factor).astype(np.float32)
        for i, sign in ((0, np.float32(1)), (1, np.float32(-1))):
            if propagate_down[i]:
                dx = bottom[i].diff.reshape(self._diff.shape)
                np.multiply(self._diff, (sign * factor)[:, None], out=dx)

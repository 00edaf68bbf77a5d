"""Accuracy: top-k classification accuracy (a metric, not a loss)."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..layer import Layer
from ..registry import register_layer


@register_layer("Accuracy", v1="ACCURACY")
class AccuracyLayer(Layer):
    """Fraction of labels found among the ``top_k`` highest scores.

    Bottom: scores x (..., C, ...), C along ``accuracy_param.axis`` (default 1);
    labels with outer*inner values (the dims before and after the axis).
    Top: accuracy (scalar); optional second top: per-class accuracy (C,).
    No blobs; no backward.
    Forward: a label l at a position is correct when fewer than ``top_k`` *other*
    classes score >= x_l there (Caffe's rule: ties count against the label, and
    a NaN score for the true class counts as correct, since every comparison with
    it is false).  accuracy = correct / counted (0 when every label is ignored),
    positions whose label equals ``ignore_label`` are skipped; per-class accuracy
    is correct_c / counted_c (0 for a class that never occurs).
    """

    exact_num_bottom = 2
    min_num_top = 1
    max_num_top = 2

    def setup(self, bottom, top) -> None:
        param = self.layer_param.accuracy_param
        self.top_k = int(param.top_k)
        if self.top_k < 1:
            raise self.config_error(f"accuracy_param.top_k must be at least 1, got {self.top_k}")
        self.has_ignore_label = param.HasField("ignore_label")
        self.ignore_label = int(param.ignore_label)

    def allow_force_backward(self, bottom_index: int) -> bool:
        # No gradient exists; keep `force_backward: true` nets from asking for one.
        return False

    def reshape(self, bottom, top) -> None:
        x, labels = bottom[0], bottom[1]
        axis = int(self.layer_param.accuracy_param.axis)
        if x.num_axes == 0 or not -x.num_axes <= axis < x.num_axes:
            raise self.shape_error(
                f"accuracy_param.axis {axis} is out of range for bottom[0] shape {x.shape}"
            )
        self.axis = axis + x.num_axes if axis < 0 else axis
        self.outer = x.count(0, self.axis)
        self.channels = x.shape[self.axis]
        self.inner = x.count(self.axis + 1)
        if self.outer * self.inner != labels.count():
            raise self.shape_error(
                f"bottom[0] has shape {x.shape} and bottom[1] has shape {labels.shape}: the number "
                f"of labels must equal the number of predictions: with axis {self.axis} there must "
                f"be {self.outer * self.inner} labels, integers in [0, {self.channels})"
            )
        if self.top_k > self.channels:
            raise self.config_error(
                f"top_k {self.top_k} exceeds the number of classes {self.channels} "
                f"(bottom[0] shape {x.shape})"
            )
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.channels,))

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.outer, self.channels, self.inner)
        label = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)  # truncates like a C cast
        if self.has_ignore_label:
            valid = label != self.ignore_label
            o_idx, j_idx = np.nonzero(valid)
            label = label[valid]
        else:
            o_idx, j_idx = np.indices((self.outer, self.inner)).reshape(2, -1)
            label = label.ravel()
        if label.size and (label.min() < 0 or label.max() >= self.channels):
            bad = label[(label < 0) | (label >= self.channels)][0]
            raise DataError(
                f"{self.describe()}: label {bad} is out of range for {self.channels} classes "
                f"(labels must be integers in [0, {self.channels}))"
            )
        scores = x[o_idx, :, j_idx]  # (counted, C)
        true_score = scores[np.arange(label.size), label]
        # The true class itself is >= its own score, hence the -1 (unless it is NaN).
        better = np.count_nonzero(scores >= true_score[:, None], axis=1) - 1
        correct = better < self.top_k
        count = label.size
        top[0].data[...] = 0 if count == 0 else np.float32(np.count_nonzero(correct)) / np.float32(count)
        if len(top) > 1:
            nums = np.bincount(label, minlength=self.channels).astype(np.float32)
            hits = np.bincount(label[correct], minlength=self.channels).astype(np.float32)
            per_class = top[1].data
            per_class[...] = 0
            np.divide(hits, nums, out=per_class, where=nums > 0)

    def backward(self, top, propagate_down, bottom) -> None:
        if any(propagate_down):
            raise self.config_error("Accuracy has no gradient; it cannot be part of backward")

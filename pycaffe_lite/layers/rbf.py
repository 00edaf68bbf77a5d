"""Euclidean RBF output units and their criterion: LeNet-5's output layer (RBF, RBFLoss).

Prototype codes. The paper's prototypes are stylised 7x12 bitmaps of the characters,
printed only as a figure (fig. 3) and designed for the whole printable ASCII set, where
confusable characters (O, o, 0) should get close codes for a linguistic post-processor.
They cannot be reproduced exactly, and for 10 digits that design goal does not apply.
Without a ``weight_filler``, the RBF layer therefore draws a fixed random +1/-1 code from
``rbf_param.code_seed``: in 84 dimensions two such codes differ in 42 places on average
(squared distance 168), the codes stay where the scaled tanh before them is not saturated
(f(+-1) = +-1), and every net built from the same prototxt gets the same code.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer
from .loss import VALID, LossLayer, get_normalizer


def random_sign_code(num_output: int, dim: int, seed: int) -> np.ndarray:
    """A (num_output, dim) float32 code of +1/-1, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((num_output, dim)) < 0.5, -1.0, 1.0).astype(np.float32)


@register_layer("RBF")
class RBFLayer(Layer):
    """Euclidean radial basis function units: squared distances to prototypes.

    Bottom: x (d_0, ..., d_{a-1}, d_a, ...), flattened from ``axis`` a (default 1) to (M, K).
    Top: y (d_0, ..., d_{a-1}, N), N = ``num_output``.
    Blobs: W (N, K), the prototypes; a fixed random +1/-1 code from ``code_seed`` unless a
    ``weight_filler`` is given (see the module docstring). With no ``param`` block the layer
    gives its prototypes ``lr_mult: 0`` and ``decay_mult: 0`` (the paper keeps them fixed);
    ``param { lr_mult: 1 }`` learns them.
    Forward: y_mi = sum_k (x_mk - w_ik)^2 = |x_m|^2 - 2 x_m . w_i + |w_i|^2.
    Backward: dx_m = 2 (sum_i dy_mi) x_m - 2 (dy W)_m;  dW_i += 2 (sum_m dy_mi) w_i - 2 (dy^T x)_i.
    Reference: LeCun, Bottou, Bengio & Haffner (Proc. IEEE 1998), section II-B, layer "output".
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.rbf_param
        self.N = int(p.num_output)
        if self.N <= 0:
            raise self.config_error("rbf_param.num_output must be set to a positive number")
        self.axis = self._axis(bottom[0])
        self.K = bottom[0].count(self.axis)
        loaded = bool(self.blobs)
        self.init_param_blobs([(self.N, self.K)], [p.weight_filler if p.HasField("weight_filler") else None])
        if not loaded and not p.HasField("weight_filler"):
            self.blobs[0].data[...] = random_sign_code(self.N, self.K, int(p.code_seed))
        if not self.layer_param.param:
            self.layer_param.param.add().CopyFrom(caffe_pb2.ParamSpec(lr_mult=0, decay_mult=0))
        self._w_sq = np.empty(self.N, np.float32)
        self._dw = np.empty((self.N, self.K), np.float32)
        self._x_sq = self._dy_sum = None

    def _axis(self, blob) -> int:
        axis = int(self.layer_param.rbf_param.axis)
        if not -blob.num_axes <= axis < max(blob.num_axes, 1):
            raise self.shape_error(f"rbf_param.axis {axis} is out of range for bottom shape {blob.shape}")
        return axis + blob.num_axes if axis < 0 else axis

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        axis = self._axis(x)
        if x.count(axis) != self.K:
            raise self.shape_error(
                f"bottom shape {x.shape} flattens from axis {axis} to {x.count(axis)} inputs, but the "
                f"prototypes have shape {self.blobs[0].shape} ({self.K} inputs)"
            )
        self.axis = axis
        self.M = x.count(0, axis)
        top[0].reshape(x.shape[:axis] + (self.N,))
        if self._x_sq is None or self._x_sq.shape[0] != self.M:
            self._x_sq = np.empty((self.M, 1), np.float32)
            self._dy_sum = np.empty((self.M, 1), np.float32)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.M, self.K)
        W = self.blobs[0].data
        y = top[0].data.reshape(self.M, self.N)
        np.matmul(x, W.T, out=y)
        y *= -2
        np.einsum("mk,mk->m", x, x, out=self._x_sq[:, 0])
        np.einsum("nk,nk->n", W, W, out=self._w_sq)
        y += self._x_sq
        y += self._w_sq
        # |x|^2 - 2 x.w + |w|^2 can round below zero when x is at a prototype
        np.maximum(y, 0, out=y)

    def backward(self, top, propagate_down, bottom) -> None:
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        W = self.blobs[0]
        if self.param_propagate_down[0]:
            dW = np.matmul(dy.T, x, out=self._dw)
            dW *= -2
            W.diff += dW
            W.diff += (2 * dy.sum(axis=0))[:, None] * W.data
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.M, self.K)
            np.matmul(dy, W.data, out=dx)
            dx *= -2
            np.sum(dy, axis=1, keepdims=True, out=self._dy_sum)
            self._dy_sum *= 2
            dx += self._dy_sum * x


@register_layer("RBFLoss")
class RBFLossLayer(LossLayer):
    """LeCun et al.'s maximum a posteriori criterion for RBF penalties.

    Bottom: y (M, C) penalties (e.g. an ``RBF`` top; flattened from axis 1), labels (M values,
    integers in [0, C) or ``loss_param.ignore_label``).  Top: loss (scalar).  No blobs.
    Forward: E = sum_valid [ y_label + log(exp(-j) + sum_i exp(-y_i)) ] / normalizer, j =
    ``rbf_loss_param.j`` (default 0): the first term pulls the right class's penalty down,
    the second ("competitive") term pushes the others up, while exp(-j) stops pushing
    classes whose penalties are already far above j. The log-sum-exp is taken around its
    largest exponent. Normalizer: ``loss_param.normalization`` (default VALID, the count of
    non-ignored labels), at least 1.
    Backward: dy_i = loss_weight / normalizer * ([i = label] - exp(-y_i) / (exp(-j) +
    sum_k exp(-y_k))), 0 for ignored samples.
    Reference: LeCun, Bottou, Bengio & Haffner (Proc. IEEE 1998), section II-C, eq. (9).
    """

    def setup(self, bottom, top) -> None:
        lp = self.layer_param.loss_param
        self.j = float(self.layer_param.rbf_loss_param.j)
        self.has_ignore_label = lp.HasField("ignore_label")
        self.ignore_label = int(lp.ignore_label)
        self.normalization = self._normalization(VALID)

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self.M = bottom[0].shape[0]
        self.C = bottom[0].count(1)
        if bottom[1].count() != self.M:
            raise self.shape_error(
                f"{self._both_shapes(bottom)}: one label per sample is needed ({self.M} labels, "
                f"integers in [0, {self.C}))"
            )

    def forward(self, bottom, top) -> None:
        y = bottom[0].data.reshape(self.M, self.C).astype(np.float64)
        label = bottom[1].data.reshape(self.M).astype(np.int64)  # truncates like a C cast
        valid = label != self.ignore_label if self.has_ignore_label else np.ones(self.M, bool)
        bad = valid & ((label < 0) | (label >= self.C))
        if bad.any():
            raise DataError(
                f"{self.describe()}: label {label[bad][0]} is out of range for {self.C} classes "
                f"(labels must be integers in [0, {self.C})"
                + (f" or the ignore_label {self.ignore_label})" if self.has_ignore_label else ")")
            )
        # log(exp(-j) + sum_i exp(-y_i)) = m + log(exp(-j - m) + sum_i exp(-y_i - m))
        m = np.maximum(-self.j, (-y).max(axis=1))
        e = np.exp(-y - m[:, None])
        rubbish = np.exp(-self.j - m)
        denom = rubbish + e.sum(axis=1)
        per_sample = y[np.arange(self.M), np.where(valid, label, 0)] + m + np.log(denom)
        self._post = e / denom[:, None]  # exp(-y_i) / (exp(-j) + sum_k exp(-y_k))
        self._label = np.where(valid, label, 0)
        self._valid = valid
        self.normalizer = get_normalizer(self.normalization, self.M, 1, int(valid.sum()))
        top[0].data[...] = np.float32(per_sample[valid].sum() / self.normalizer)

    def backward(self, top, propagate_down, bottom) -> None:
        self._no_label_gradient(propagate_down)
        if not propagate_down[0]:
            return
        g = -self._post
        g[np.arange(self.M), self._label] += 1
        g *= self._valid[:, None] * (top[0].diff.flat[0] / self.normalizer)
        bottom[0].diff[...] = g.reshape(bottom[0].shape)

"""Element-wise neuron layers: ReLU, Sigmoid, TanH, Dropout.

Each takes one bottom and gives one top of the same shape, and may run in place
(``bottom: "x" top: "x"``): then ``bottom[0] is top[0]`` and backward reads only
what forward left behind (the top data, or a saved mask), as Caffe's do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..blob import Blob
from ..kernels.neuron import relu_backward, relu_backward_inplace, relu_forward, relu_forward_inplace
from ..layer import TRAIN, Layer
from ..registry import register_layer
from ..rng import get_rng


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; in place allowed."""

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])


def _scratch(buf: np.ndarray | None, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """Return ``buf`` if it already has ``shape``, else a new uninitialised array."""
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        return np.empty(shape, dtype)
    return buf


@register_layer("ReLU", v1="RELU")
class ReLULayer(NeuronLayer):
    """Rectified linear unit, leaky when ``negative_slope`` != 0.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: y = max(x, 0) + negative_slope * min(x, 0).
    Backward: dx = dy * (1 if x > 0 else negative_slope).  In place, x is read from
    the top data, whose sign equals the bottom's for ``negative_slope >= 0``.
    Papers: Nair & Hinton, "Rectified Linear Units Improve Restricted Boltzmann
    Machines" (ICML 2010); leaky form: Maas, Hannun & Ng, "Rectifier Nonlinearities
    Improve Neural Network Acoustic Models" (ICML 2013).
    """

    def setup(self, bottom, top) -> None:
        self.negative_slope = float(self.layer_param.relu_param.negative_slope)

    def forward(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            relu_forward_inplace(top[0].data.reshape(-1), self.negative_slope)
        else:
            relu_forward(bottom[0].data.reshape(-1), self.negative_slope, top[0].data.reshape(-1))

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        # Caffe's rule reads the bottom data; in place that is the top data, and
        # y > 0 exactly where x > 0 (for negative_slope >= 0).
        x = bottom[0].data.reshape(-1)
        if top[0] is bottom[0]:
            relu_backward_inplace(x, self.negative_slope, bottom[0].diff.reshape(-1))
        else:
            relu_backward(x, top[0].diff.reshape(-1), self.negative_slope, bottom[0].diff.reshape(-1))


@register_layer("Sigmoid", v1="SIGMOID")
class SigmoidLayer(NeuronLayer):
    """Logistic sigmoid.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: y = 1 / (1 + exp(-x)), computed as Caffe does, 0.5 * tanh(0.5 x) + 0.5,
    which cannot overflow.
    Backward: dx = dy * y * (1 - y) (reads only the top, so in place works).
    Reference: LeCun, Bottou, Orr & Mueller, "Efficient BackProp" (1998).
    """

    def setup(self, bottom, top) -> None:
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        y = top[0].data
        np.multiply(bottom[0].data, 0.5, out=y)
        np.tanh(y, out=y)
        y *= 0.5
        y += 0.5

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        y = top[0].data
        slope = np.subtract(1.0, y, out=self._buf)
        slope *= y
        np.multiply(top[0].diff, slope, out=bottom[0].diff)


@register_layer("TanH", v1="TANH")
class TanHLayer(NeuronLayer):
    """Hyperbolic tangent.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: y = tanh(x).
    Backward: dx = dy * (1 - y^2) (reads only the top, so in place works).
    Reference: LeCun, Bottou, Orr & Mueller, "Efficient BackProp" (1998).
    """

    def setup(self, bottom, top) -> None:
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        np.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        y = top[0].data
        slope = np.multiply(y, y, out=self._buf)
        np.subtract(1.0, slope, out=slope)
        np.multiply(top[0].diff, slope, out=bottom[0].diff)


def _has_field(message, name: str) -> bool:
    """True when the schema defines ``name`` and the message sets it."""
    return name in message.DESCRIPTOR.fields_by_name and message.HasField(name)


@register_layer("Dropout", v1="DROPOUT")
class DropoutLayer(NeuronLayer):
    """Dropout with Caffe's "inverted" scaling.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward, TRAIN: y = x * m / (1 - p), m ~ Bernoulli(1 - p) drawn from the shared
    RNG each pass, p = ``dropout_ratio``.  TEST: y = x.
    Backward: dx = dy * m / (1 - p) in TRAIN, dx = dy in TEST (the mask is saved, so
    in place works).
    ``scale_train: false`` (a Fast R-CNN-era extension, honoured only if the schema
    has the field) moves the scaling to TEST instead: TRAIN y = x * m, TEST
    y = x * (1 - p).
    Papers: Hinton et al., "Improving neural networks by preventing co-adaptation of
    feature detectors" (2012); Srivastava et al., "Dropout" (JMLR 2014).
    """

    def setup(self, bottom, top) -> None:
        param = self.layer_param.dropout_param
        self.threshold = float(param.dropout_ratio)
        if not 0.0 <= self.threshold < 1.0:
            raise self.config_error(f"dropout_ratio must be in [0, 1), got {self.threshold}")
        self.scale = 1.0 / (1.0 - self.threshold)
        self.scale_train = bool(param.scale_train) if _has_field(param, "scale_train") else True
        self._uniform: np.ndarray | None = None
        self._keep: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        shape = bottom[0].shape
        self._uniform = _scratch(self._uniform, shape)
        self._keep = _scratch(self._keep, shape, np.bool_)
        self._mask = _scratch(self._mask, shape)

    def forward(self, bottom, top) -> None:
        x, y = bottom[0].data, top[0].data
        if self.phase == TRAIN:
            get_rng().random(out=self._uniform, dtype=np.float32)
            keep = np.greater_equal(self._uniform, self.threshold, out=self._keep)
            # The mask holds 0 or the scale, so forward and backward are one multiply.
            np.multiply(keep, np.float32(self.scale if self.scale_train else 1.0), out=self._mask)
            np.multiply(x, self._mask, out=y)
        elif self.scale_train:
            if y is not x:
                np.copyto(y, x)
        else:
            np.multiply(x, np.float32(1.0 - self.threshold), out=y)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == TRAIN:
            np.multiply(dy, self._mask, out=dx)
        elif self.scale_train:
            if dx is not dy:
                np.copyto(dx, dy)
        else:
            np.multiply(dy, np.float32(1.0 - self.threshold), out=dx)

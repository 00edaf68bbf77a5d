"""Softmax over one axis."""

from __future__ import annotations

import numpy as np

from ..layer import Layer
from ..registry import register_layer


@register_layer("Softmax", v1="SOFTMAX")
class SoftmaxLayer(Layer):
    """Softmax along ``softmax_param.axis`` (default 1, negative allowed).

    Bottom: x (..., C, ...), C = the size of ``axis``.  Top: y, same shape.  No blobs.
    Forward: y_c = exp(x_c - max_k x_k) / sum_k exp(x_k - max_k x_k) (the max is
    subtracted for numerical stability; it cancels).
    Backward: dx_c = (dy_c - sum_k dy_k y_k) * y_c (reads only the top, so in place works).
    Reference: Bridle, "Probabilistic interpretation of feedforward classification
    network outputs" (1990).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        self._scale: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        axis = int(self.layer_param.softmax_param.axis)
        if not -x.num_axes <= axis < max(x.num_axes, 1) or x.num_axes == 0:
            raise self.shape_error(f"softmax_param.axis {axis} is out of range for bottom shape {x.shape}")
        self.axis = axis + x.num_axes if axis < 0 else axis
        self.outer = x.count(0, self.axis)
        self.channels = x.shape[self.axis]
        self.inner = x.count(self.axis + 1)
        if top[0] is not x:
            top[0].reshape_like(x)
        shape = (self.outer, 1, self.inner)
        if self._scale is None or self._scale.shape != shape:
            self._scale = np.empty(shape, np.float32)

    def _view(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.outer, self.channels, self.inner)

    def forward(self, bottom, top) -> None:
        x, y = self._view(bottom[0].data), self._view(top[0].data)
        scale = self._scale
        np.max(x, axis=1, keepdims=True, out=scale)
        np.subtract(x, scale, out=y)  # in place: x is no longer read after this
        np.exp(y, out=y)
        np.sum(y, axis=1, keepdims=True, out=scale)
        np.divide(y, scale, out=y)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        y, dy, dx = self._view(top[0].data), self._view(top[0].diff), self._view(bottom[0].diff)
        dot = self._scale
        np.einsum("ocj,ocj->oj", dy, y, out=dot[:, 0, :])
        np.subtract(dy, dot, out=dx)
        dx *= y

"""Softmax over one axis."""

from __future__ import annotations

from ..kernels.softmax_loss import softmax_backward, softmax_forward
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

    def forward(self, bottom, top) -> None:
        # in place (top is bottom) works: the kernel reads each row before writing it
        softmax_forward(
            bottom[0].data.reshape(-1), self.outer, self.channels, self.inner, top[0].data.reshape(-1)
        )

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        softmax_backward(
            top[0].data.reshape(-1), top[0].diff.reshape(-1), self.outer, self.channels, self.inner,
            bottom[0].diff.reshape(-1),
        )

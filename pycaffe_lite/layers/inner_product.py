"""InnerProduct: the fully connected layer."""

from __future__ import annotations

import numpy as np

from ..layer import Layer
from ..registry import register_layer


@register_layer("InnerProduct", v1="INNER_PRODUCT")
class InnerProductLayer(Layer):
    """Fully connected: y = x W^T + b.

    Bottom: x (d_0, ..., d_{a-1}, d_a, ...), flattened from ``axis`` a to (M, K),
    M = d_0...d_{a-1}, K = d_a * d_{a+1} * ...  (``axis`` may be negative).
    Top: y (d_0, ..., d_{a-1}, N), N = ``num_output``.
    Blobs: W (N, K), or (K, N) with ``transpose``; b (N,) if ``bias_term``.
    Forward: y = x W^T + b  (y = x W + b with ``transpose``).
    Backward: dW += dy^T x  (dW += x^T dy);  db += sum over M of dy;
    dx = dy W  (dx = dy W^T).
    Reference: Rumelhart, Hinton & Williams, "Learning representations by
    back-propagating errors" (Nature 1986).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.inner_product_param
        self.N = int(param.num_output)
        if self.N <= 0:
            raise self.config_error("inner_product_param.num_output must be set to a positive number")
        self.bias_term = bool(param.bias_term)
        self.transpose = bool(param.transpose)
        self.axis = self._axis(bottom[0])
        self.K = bottom[0].count(self.axis)
        shapes = [(self.K, self.N) if self.transpose else (self.N, self.K)]
        fillers = [param.weight_filler]
        if self.bias_term:
            shapes.append((self.N,))
            fillers.append(param.bias_filler)
        self.init_param_blobs(shapes, fillers)
        self._weight_tmp = np.empty(shapes[0], np.float32)
        self._bias_tmp = np.empty(self.N, np.float32)

    def _axis(self, blob) -> int:
        axis = int(self.layer_param.inner_product_param.axis)
        if not -blob.num_axes <= axis < max(blob.num_axes, 1):
            raise self.shape_error(
                f"inner_product_param.axis {axis} is out of range for bottom shape {blob.shape}"
            )
        return axis + blob.num_axes if axis < 0 else axis

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        axis = self._axis(x)
        K = x.count(axis)
        if K != self.K:
            w_shape = self.blobs[0].shape
            raise self.shape_error(
                f"bottom shape {x.shape} flattens from axis {axis} to {K} inputs, but the "
                f"weights have shape {w_shape} ({self.K} inputs); the input size cannot "
                "change after set-up"
            )
        self.axis = axis
        self.M = x.count(0, axis)
        top[0].reshape(x.shape[:axis] + (self.N,))

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        W = self.blobs[0].data
        np.matmul(x, W if self.transpose else W.T, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom) -> None:
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        W = self.blobs[0]
        if self.param_propagate_down[0]:
            # Parameter diffs accumulate (iter_size, shared weights): compute into a
            # scratch buffer, then add.
            if self.transpose:
                np.matmul(x.T, dy, out=self._weight_tmp)
            else:
                np.matmul(dy.T, x, out=self._weight_tmp)
            W.diff += self._weight_tmp
        if self.bias_term and self.param_propagate_down[1]:
            np.sum(dy, axis=0, out=self._bias_tmp)
            self.blobs[1].diff += self._bias_tmp
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.M, self.K)
            np.matmul(dy, W.data.T if self.transpose else W.data, out=dx)

"""InnerProduct: the fully connected layer."""

from __future__ import annotations

import numpy as np

from .._split import available_cpus, matmul_halves, split_point
from .._threads import SerialBlas, blas_libs
from ..layer import Layer
from ..registry import register_layer

#: Forward products of this many multiply-adds (M x K x N) run as two halves of the rows at once,
#: one on pycaffe_lite/_split.py's GIL-free worker, each with one BLAS thread, when two threads are
#: wanted: OpenBLAS's own two threads meet at a cost that is a large part of so small a product.
#: Measured (CIFAR-10 quick's ip1, 100 x 1024 x 64, median of 300 calls): 74 us split against
#: 86 us with BLAS's threads and 112 us on one.  LeNet's ip1 (64 x 800 x 500) keeps BLAS's
#: threads: split, it measured 0.27 against 0.31 ms alone, but in training the worker's spin after
#: the product (pycaffe_lite/_split.py WORKER_SPIN_US) took a core from the layers after it, and
#: LeNet's iteration went from 4.7-5.1 ms to 5.1-6.8.  (0, 0): never.
SPLIT_MACS = (1 << 20, 16 << 20)

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
        lo, hi = SPLIT_MACS
        self._cut = split_point(self.M) if self.M >= 32 and lo <= self.M * self.K * self.N <= hi else 0

    def _split_forward(self) -> bool:
        """Whether the forward product may run as two halves now: two CPUs and BLAS asked for two
        threads or more (one thread wanted: the whole product, as before)."""
        if not self._cut or available_cpus() < 2:
            return False
        libs = blas_libs()
        return bool(libs) and all(lib.get_num_threads() >= 2 for lib in libs)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        W = self.blobs[0].data
        Wt = W if self.transpose else W.T
        if self._split_forward():
            k = self._cut
            with SerialBlas():
                matmul_halves((x[:k], Wt, y[:k]), (x[k:], Wt, y[k:]), (x, Wt, y))
        else:
            np.matmul(x, Wt, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom) -> None:
        # Not split over two threads: in dW's rows the product worker's halves and whole products
        # differed in the last bit (so a training run did not repeat exactly), and dx's halves
        # alone gained nothing over BLAS's two threads (LeNet's ip1).
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

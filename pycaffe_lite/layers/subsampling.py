"""Subsampling: LeNet-5's trainable subsampling (its layers S2 and S4)."""

from __future__ import annotations

import numpy as np

from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer


@register_layer("Subsampling")
class SubsamplingLayer(Layer):
    """Window sums times one trainable coefficient plus one trainable bias, per channel.

    Bottom: x (N, C, H, W).  Top: y (N, C, OH, OW), OH = floor((H - k) / s) + 1 (complete
    windows only, no padding), k = ``kernel_size`` (default 2), s = ``stride`` (default k).
    Blobs: coeff (C,) [``coeff_filler``, default constant 1/k^2: an average];
    bias (C,) [``bias_filler``, default constant 0].
    Forward: S[n,c,i,j] = sum_{a,b<k} x[n, c, s i + a, s j + b];  y = coeff_c S + bias_c.
    Backward: dcoeff_c += sum_{n,i,j} dy S;  dbias_c += sum_{n,i,j} dy;
    dx[n, c, s i + a, s j + b] = sum over the windows (i, j) holding it of coeff_c dy[n,c,i,j].
    The squashing function that follows in the paper is a separate layer (``ScaledTanH``).
    Reference: LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
    recognition" (Proc. IEEE 1998), section II-B.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.subsampling_param
        self.k = int(p.kernel_size)
        self.s = int(p.stride) if p.HasField("stride") else self.k
        if self.k < 1 or self.s < 1:
            raise self.config_error(f"kernel_size ({self.k}) and stride ({self.s}) must be >= 1")
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"bottom '{bottom[0].name}' has shape {bottom[0].shape}; Subsampling needs "
                                   "(N, C, H, W)")
        self.channels = bottom[0].shape[1]
        coeff_filler = p.coeff_filler if p.HasField("coeff_filler") else \
            caffe_pb2.FillerParameter(type="constant", value=1.0 / (self.k * self.k))
        bias_filler = p.bias_filler if p.HasField("bias_filler") else caffe_pb2.FillerParameter(type="constant")
        self.init_param_blobs([(self.channels,), (self.channels,)], [coeff_filler, bias_filler])
        self._sum = self._buf = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes != 4 or x.shape[1] != self.channels:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape} but the layer was set up for "
                                   f"(N, {self.channels}, H, W)")
        N, C, H, W = x.shape
        if H < self.k or W < self.k:
            raise self.shape_error(f"bottom '{x.name}' {x.shape} is smaller than the {self.k}x{self.k} window")
        OH, OW = (H - self.k) // self.s + 1, (W - self.k) // self.s + 1
        top[0].reshape(N, C, OH, OW)
        if self._sum is None or self._sum.shape != top[0].shape:
            self._sum = np.empty(top[0].shape, np.float32)  # S, kept for the coefficient gradient
            self._buf = np.empty(top[0].shape, np.float32)

    def _window(self, arr: np.ndarray, a: int, b: int) -> np.ndarray:
        """The (N, C, OH, OW) strided view of the elements at offset (a, b) of every window."""
        OH, OW = self._sum.shape[2:]
        return arr[:, :, a:a + self.s * (OH - 1) + 1:self.s, b:b + self.s * (OW - 1) + 1:self.s]

    def forward(self, bottom, top) -> None:
        x, S = bottom[0].data, self._sum
        np.copyto(S, self._window(x, 0, 0))
        for a in range(self.k):
            for b in range(self.k):
                if a or b:
                    S += self._window(x, a, b)
        y = top[0].data
        np.multiply(S, self.blobs[0].data[None, :, None, None], out=y)
        y += self.blobs[1].data[None, :, None, None]

    def backward(self, top, propagate_down, bottom) -> None:
        dy = top[0].diff
        if self.param_propagate_down[0]:
            np.multiply(dy, self._sum, out=self._buf)
            self.blobs[0].diff += self._buf.sum(axis=(0, 2, 3))
        if self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3))
        if propagate_down[0]:
            g = np.multiply(dy, self.blobs[0].data[None, :, None, None], out=self._buf)
            dx = bottom[0].diff
            dx[...] = 0  # inputs outside every window get no gradient; overlapping windows add up
            for a in range(self.k):
                for b in range(self.k):
                    self._window(dx, a, b)[...] += g

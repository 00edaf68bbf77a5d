"""LRN: local response normalization across channels or within each channel."""
from __future__ import annotations

import numpy as np

from ..kernels.pooling import ave_pool_backward, ave_pool_forward, make_pool_geom
from ..layer import Layer
from ..registry import register_layer

ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


@register_layer("LRN", v1="LRN")
class LRNLayer(Layer):
    """Local response normalization, Caffe's two regions.

    Bottom: x (N, C, H, W).  Top: y, same shape.  No blobs.  n = ``local_size`` (odd).
    ACROSS_CHANNELS: s = k + alpha / n * sum_{c' = c - (n-1)/2}^{c + (n-1)/2} x_{c'}^2 (channels
    outside [0, C) count as 0);  y = x s^-beta.
    Backward: dx = dy s^-beta - (2 alpha beta / n) x sum_{window of c} (dy y / s).
    WITHIN_CHANNEL (Caffe builds it from Power, AVE Pooling and Eltwise layers): with A the n x n
    AVE pooling at stride 1 and pad (n-1)/2 -- which divides by n^2 everywhere, padding
    included --, s = 1 + alpha A(x^2);  y = x s^-beta.  ``k`` is not used (Caffe's shift is 1).
    Backward: dx = dy s^-beta - 2 alpha beta x A^T(dy y / s).
    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks" (NIPS 2012), section 3.3.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 != 1:
            raise self.config_error(f"local_size must be odd, got {self.size}")
        self.pre_pad = (self.size - 1) // 2
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.k = float(p.k)
        self.norm_region = p.norm_region
        if self.norm_region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
            raise self.config_error(f"unknown norm_region {self.norm_region}")
        self._key = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes != 4:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape}; LRN needs (N, C, H, W)")
        if top[0] is x:
            raise self.config_error("LRN cannot run in place; give the top its own name")
        top[0].reshape_like(x)
        if x.shape != self._key:
            self._key = x.shape
            N, C, H, W = x.shape
            self.scale = np.empty(x.shape, np.float32)
            self.buf = np.empty(x.shape, np.float32)
            if self.norm_region == ACROSS_CHANNELS:
                # squares padded with (n-1)/2 zero channels on each side
                self.padded = np.zeros((N, C + self.size - 1, H, W), np.float32)
            else:
                self.geom = make_pool_geom(H, W, self.size, self.size, 1, 1, self.pre_pad, self.pre_pad)

    def _window_sum(self, values: np.ndarray, out: np.ndarray) -> None:
        """out[:, c] = sum of values[:, c'] over the channel window of c (zero-padded)."""
        C = values.shape[1]
        padded = self.padded
        np.copyto(padded[:, self.pre_pad:self.pre_pad + C], values)
        np.copyto(out, padded[:, 0:C])
        for j in range(1, self.size):
            out += padded[:, j:j + C]

    def forward(self, bottom, top) -> None:
        x, y, s = bottom[0].data, top[0].data, self.scale
        sq = np.multiply(x, x, out=self.buf)
        if self.norm_region == ACROSS_CHANNELS:
            self._window_sum(sq, s)
            s *= np.float32(self.alpha / self.size)
            s += np.float32(self.k)
        else:
            ave_pool_forward(sq, self.geom, s)
            s *= np.float32(self.alpha)
            s += np.float32(1.0)
        np.power(s, np.float32(-self.beta), out=y)
        y *= x

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        x, y, s = bottom[0].data, top[0].data, self.scale
        dy, dx = top[0].diff, bottom[0].diff
        ratio = np.multiply(dy, y, out=self.buf)
        ratio /= s
        if self.norm_region == ACROSS_CHANNELS:
            self._window_sum(ratio, dx)  # the window is symmetric: its adjoint is itself
            dx *= np.float32(-2.0 * self.alpha * self.beta / self.size)
        else:
            ave_pool_backward(ratio, self.geom, dx)
            dx *= np.float32(-2.0 * self.alpha * self.beta)
        dx *= x
        # + dy s^-beta (buf held ratio, which is no longer needed)
        np.power(s, np.float32(-self.beta), out=self.buf)
        self.buf *= dy
        dx += self.buf

"""Normalization layers: BatchNorm, MVN.

Both normalize over every axis but the channel axis (BatchNorm) or over the trailing
axes of each item (MVN), in float32 like Caffe, and keep what backward needs (the
normalized output and the divisor) so that a later in-place layer (Scale, ReLU) that
overwrites their top does not change their gradient.
"""

from __future__ import annotations

import logging

import numpy as np

from ..layer import TEST
from ..proto import caffe_pb2
from ..registry import register_layer
from .neuron import NeuronLayer, _scratch

log = logging.getLogger("pycaffe_lite")


@register_layer("BatchNorm")
class BatchNormLayer(NeuronLayer):
    """Normalize each channel to zero mean and unit variance over the batch and space.

    Bottom: x (N, C, ...) (a 1-axis x is one channel).  Top: y, same shape; in place allowed.
    Blobs, exactly as Caffe stores them (so zoo caffemodels load): the running sum of
    means (C,), the running sum of variances (C,), and their scale factor s (1,).
    The statistics are mean = blob0 / s and var = blob1 / s (all zero while s == 0).
    The net never learns them: set-up gives every blob ``lr_mult: 0`` as Caffe does.

    Forward: y = (x - mean) / sqrt(var + eps) per channel, with
    * ``use_global_stats`` (default: true in TEST, false in TRAIN) the stored statistics;
    * otherwise the batch's own mean and biased variance over the m = N*H*W values of a
      channel, and then the running sums are updated with f = ``moving_average_fraction``
      (default .999): s = f s + 1; blob0 = f blob0 + mean; blob1 = f blob1 + m/(m-1) var
      (the unbiased variance; factor 1 when m == 1).
    Backward: global statistics: dx = dy / sqrt(var + eps); batch statistics:
    dx = (dy - mean(dy) - mean(dy y) y) / sqrt(var + eps), means over N*H*W per channel.
    The scale and shift of the paper are a separate Scale layer (``bias_term: true``).
    Reference: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
    by Reducing Internal Covariate Shift" (ICML 2015).
    """

    def setup(self, bottom, top) -> None:
        param = self.layer_param.batch_norm_param
        self.moving_average_fraction = np.float32(param.moving_average_fraction)
        self.use_global_stats = self.phase == TEST
        if param.HasField("use_global_stats"):
            self.use_global_stats = bool(param.use_global_stats)
        self.eps = np.float32(param.eps)
        x = bottom[0]
        if x.num_axes == 0:
            raise self.shape_error("the bottom is a scalar; BatchNorm needs (N, C, ...) or (N,)")
        self.channels = 1 if x.num_axes == 1 else x.shape[1]
        self.init_param_blobs([(self.channels,), (self.channels,), (1,)], [None, None, None])
        self._mask_statistics()
        self._x_norm = self._std = self._buf = None

    def _mask_statistics(self) -> None:
        """Give the three statistics blobs ``lr_mult: 0`` in the layer's own parameter (what
        the net reads after set-up), as Caffe does.

        Three param specs are the pre-1.0 way of freezing the statistics by hand: Caffe's
        net upgrade then sets lr_mult and decay_mult to 0 in each (keeping names). Fewer
        specs must already say lr_mult 0 (the default is 1); Caffe refuses anything else.
        """
        specs = self.layer_param.param
        if len(specs) == len(self.blobs):
            if any(s.lr_mult != 0 for s in specs):
                log.info("%s: statistics blobs get lr_mult 0 and decay_mult 0 (Caffe's BatchNorm upgrade)",
                         self.describe())
            for s in specs:
                s.lr_mult = 0
                s.decay_mult = 0
            return
        for i, s in enumerate(specs):
            if i < len(self.blobs) and s.lr_mult != 0:
                raise self.config_error(
                    f"param {i} has lr_mult {s.lr_mult:g}, but the batch statistics are not learned "
                    "parameters; give param {{ lr_mult: 0 }} or leave the param blocks out (the "
                    "layer sets lr_mult 0 itself)"
                )
        while len(specs) < len(self.blobs):
            specs.add().CopyFrom(caffe_pb2.ParamSpec(lr_mult=0))

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        channels = 1 if x.num_axes == 1 else x.shape[1]
        if channels != self.channels:
            raise self.shape_error(
                f"bottom shape {x.shape} has {channels} channels but the layer was set up for "
                f"{self.channels} (its statistics blobs have shape ({self.channels},))"
            )
        super().reshape(bottom, top)
        self.num = x.shape[0]
        self.spatial = x.count() // max(1, self.num * self.channels)
        shape3 = (self.num, self.channels, self.spatial)
        self._x_norm = _scratch(self._x_norm, shape3)
        self._buf = _scratch(self._buf, shape3)
        if self._std is None:
            self._std = np.empty(self.channels, np.float32)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The stored (mean, variance): blob0 / s and blob1 / s, zeros while s == 0."""
        s = self.blobs[2].data[0]
        factor = np.float32(0) if s == 0 else np.float32(1) / s
        return self.blobs[0].data * factor, self.blobs[1].data * factor

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.num, self.channels, self.spatial)
        m = self.num * self.spatial
        if self.use_global_stats:
            mean, var = self.statistics()
        else:
            mean = x.mean(axis=(0, 2), dtype=np.float32)
        centered = np.subtract(x, mean[None, :, None], out=self._buf)  # before y overwrites x
        if not self.use_global_stats:
            var = np.square(centered).mean(axis=(0, 2), dtype=np.float32)
            f = self.moving_average_fraction
            s = self.blobs[2].data
            s *= f
            s += np.float32(1)
            self.blobs[0].data[...] = f * self.blobs[0].data + mean
            correction = np.float32(m) / np.float32(m - 1) if m > 1 else np.float32(1)
            self.blobs[1].data[...] = f * self.blobs[1].data + correction * var
        np.sqrt(var + self.eps, out=self._std)
        np.divide(centered, self._std[None, :, None], out=self._x_norm)
        top[0].data[...] = self._x_norm.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.num, self.channels, self.spatial)
        std = self._std[None, :, None]
        if self.use_global_stats:
            np.divide(dy, std, out=bottom[0].diff.reshape(dy.shape))
            return
        y = self._x_norm
        mean_dy = dy.mean(axis=(0, 2), dtype=np.float32)[None, :, None]
        mean_dy_y = np.multiply(dy, y, out=self._buf).mean(axis=(0, 2), dtype=np.float32)[None, :, None]
        # Into the scratch first: in place, dy and dx are one array.
        dx = np.multiply(y, mean_dy_y, out=self._buf)
        np.subtract(dy, dx, out=dx)
        dx -= mean_dy
        dx /= std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)


@register_layer("MVN")  # V1 enum MVN is spelled the same
class MVNLayer(NeuronLayer):
    """Mean-variance normalization of each item (and channel) on its own.

    Bottom: x (N, C, ...).  Top: y, same shape; in place allowed.  No blobs.
    Groups: each (n, c) over the axes after C, or each n over C and the rest with
    ``across_channels``; d = the group size.
    Forward: y = x - mean(x), and with ``normalize_variance`` (default true)
    y = (x - mean) / (sqrt(mean((x - mean)^2)) + eps); Caffe adds ``eps`` (default 1e-9)
    to the standard deviation, not to the variance.
    Backward (Caffe's formula, exact up to the eps term):
    dx = (dy - mean(dy) - y mean(dy y)) / (std + eps), or dx = dy - mean(dy) without
    variance normalization.
    Reference: the mean-variance normalization of image features, e.g. Jarrett et al.,
    "What is the Best Multi-Stage Architecture for Object Recognition?" (ICCV 2009).
    """

    def setup(self, bottom, top) -> None:
        param = self.layer_param.mvn_param
        self.normalize_variance = bool(param.normalize_variance)
        self.across_channels = bool(param.across_channels)
        self.eps = np.float32(param.eps)
        if bottom[0].num_axes < (1 if self.across_channels else 2):
            raise self.shape_error(
                f"bottom shape {bottom[0].shape} has no channel axis; use across_channels: true "
                "or give (N, C, ...)"
            )
        self._y = self._std = self._buf = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        x = bottom[0]
        self.groups = x.shape[0] if self.across_channels else x.shape[0] * x.shape[1]
        self.dim = x.count() // max(1, self.groups)
        shape2 = (self.groups, self.dim)
        self._y = _scratch(self._y, shape2)
        self._buf = _scratch(self._buf, shape2)
        if self._std is None or self._std.shape != (self.groups, 1):
            self._std = np.empty((self.groups, 1), np.float32)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.groups, self.dim)
        y = np.subtract(x, x.mean(axis=1, dtype=np.float32, keepdims=True), out=self._y)
        if self.normalize_variance:
            var = np.square(y, out=self._buf).mean(axis=1, dtype=np.float32, keepdims=True)
            np.sqrt(var, out=self._std)
            self._std += self.eps
            y /= self._std
        top[0].data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.groups, self.dim)
        mean_dy = dy.mean(axis=1, dtype=np.float32, keepdims=True)
        if not self.normalize_variance:
            np.subtract(dy, mean_dy, out=bottom[0].diff.reshape(dy.shape))
            return
        y = self._y
        mean_dy_y = np.multiply(dy, y, out=self._buf).mean(axis=1, dtype=np.float32, keepdims=True)
        dx = np.multiply(y, mean_dy_y, out=self._buf)  # scratch: in place, dy is dx
        np.subtract(dy, dx, out=dx)
        dx -= mean_dy
        dx /= self._std
        bottom[0].diff[...] = dx.reshape(bottom[0].shape)

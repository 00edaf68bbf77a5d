"""Pooling: MAX, AVE and STOCHASTIC over 2-d windows, Caffe's output-size rounding."""
from __future__ import annotations

import numpy as np

from ..kernels.pooling import (
    ave_pool_backward,
    ave_pool_forward,
    make_pool_geom,
    max_pool_backward,
    max_pool_backward_serial,
    max_pool_forward,
    max_pool_forward_2x2,
    pool_out_size,
)
from ..kernels.stochastic_pooling import sto_pool_forward_test, sto_pool_forward_train, sto_pool_test_backward
from ..layer import TRAIN, Layer
from ..registry import register_layer
from ..rng import get_rng

MAX, AVE, STOCHASTIC = 0, 1, 2

# Bottoms up to this many floats (1 MB) take the serial MAX backward: the scatter then takes
# ~20 us, about what waking a second thread for a parallel region costs (~10 us on 2 cores).
# LeNet's pool2 backward (204,800 floats), 2 threads: 29 us parallel, 20 us serial.
SERIAL_BACKWARD_MAX = 1 << 18


@register_layer("Pooling", v1="POOLING")
class PoolingLayer(Layer):
    """Spatial pooling.

    Bottom: x (N, C, H, W).  Top: y (N, C, OH, OW), OH = ceil((H + 2 pad - k) / stride) + 1,
    less 1 when the last window would start inside the padding; optional second top: the MAX
    argmax (flat h*W + w, as float).  No blobs.
    MAX: y = max over the window (clipped to the image); backward routes dy to the argmax.
    AVE: y = sum over the clipped window / window size counting padding; backward spreads
    dy / size over the window.  ``global_pooling`` pools each whole plane.
    STOCHASTIC (Zeiler & Fergus, "Stochastic Pooling for Regularization of Deep Convolutional
    Neural Networks", ICLR 2013; activations assumed non-negative): TRAIN draws one pixel per
    window with probability proportional to its value (the shared RNG) and backward routes dy
    to it; TEST gives sum(x^2) / sum(x), with its exact derivative in backward (Caffe has none).
    As in Caffe, its windows start at oh*stride, ignoring the padding the output size counts
    (see kernels/stochastic_pooling.py).
    """

    exact_num_bottom = 1
    min_num_top = 1
    max_num_top = 2

    def setup(self, bottom, top) -> None:
        p = self.layer_param.pooling_param
        self.pool = p.pool
        if self.pool not in (MAX, AVE, STOCHASTIC):
            raise self.config_error(f"unknown pool method {self.pool}; use MAX, AVE or STOCHASTIC")
        if len(top) == 2 and self.pool != MAX:
            raise self.config_error("a second top (the argmax mask) needs pool: MAX")
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"bottom '{bottom[0].name}' has shape {bottom[0].shape}; pooling needs (N, C, H, W)")
        self.global_pooling = p.global_pooling
        has_kernel = p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling:
            if has_kernel:
                raise self.config_error("with global_pooling the kernel size cannot be given")
        elif not has_kernel:
            raise self.config_error("kernel_size (or kernel_h and kernel_w) is required unless global_pooling")
        self.ph, self.pw = _pair(p, "pad", 0, self)
        self.sh, self.sw = _pair(p, "stride", 1, self)
        if self.global_pooling:
            if (self.ph, self.pw) != (0, 0) or (self.sh, self.sw) != (1, 1):
                raise self.config_error("with global_pooling, pad must be 0 and stride 1")
        else:
            self.kh, self.kw = _pair(p, "kernel", 0, self)
            if self.ph >= self.kh or self.pw >= self.kw:
                raise self.config_error(f"pad {self.ph}x{self.pw} must be smaller than kernel {self.kh}x{self.kw}")
        self._key = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes != 4:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape}; pooling needs (N, C, H, W)")
        N, C, H, W = x.shape
        if self.global_pooling:
            self.kh, self.kw = H, W
        any_pad = self.ph > 0 or self.pw > 0
        OH = pool_out_size(H, self.kh, self.ph, self.sh, any_pad)
        OW = pool_out_size(W, self.kw, self.pw, self.sw, any_pad)
        if OH < 1 or OW < 1:
            raise self.shape_error(f"input '{x.name}' {x.shape} is too small for kernel {self.kh}x{self.kw}")
        for t in top:
            t.reshape(N, C, OH, OW)
        key = x.shape
        if key != self._key:
            self._key = key
            self.geom = make_pool_geom(H, W, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)
            # the argmax is a flat index into an H*W plane: int16 holds it for planes of up to
            # 32767 pixels (the usual case), half the memory and traffic of int32
            self.mask = np.empty((N, C, OH, OW), np.int16 if H * W <= np.iinfo(np.int16).max else np.int32)
            small = x.count() <= SERIAL_BACKWARD_MAX
            self._max_backward = max_pool_backward_serial if small else max_pool_backward
            two = self.kh == self.kw == 2 and self.ph == self.pw == 0
            self._max_forward = max_pool_forward_2x2 if two else max_pool_forward
            if self.pool == STOCHASTIC:
                self._uniform = np.empty((N, C, OH, OW), np.float32)

    def forward(self, bottom, top) -> None:
        if self.pool == MAX:
            self._max_forward(bottom[0].data, self.geom, top[0].data, self.mask)
            if len(top) == 2:
                top[1].data[...] = self.mask
        elif self.pool == AVE:
            ave_pool_forward(bottom[0].data, self.geom, top[0].data)
        elif self.phase == TRAIN:
            get_rng().random(out=self._uniform, dtype=np.float32)
            sto_pool_forward_train(bottom[0].data, self.geom, self._uniform, top[0].data, self.mask)
        else:
            sto_pool_forward_test(bottom[0].data, self.geom, top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        if self.pool == MAX:
            self._max_backward(top[0].diff, self.mask, self.geom, bottom[0].diff)
        elif self.pool == AVE:
            ave_pool_backward(top[0].diff, self.geom, bottom[0].diff)
        elif self.phase == TRAIN:  # the sampled pixels' indices have the argmax mask's layout
            self._max_backward(top[0].diff, self.mask, self.geom, bottom[0].diff)
        else:
            sto_pool_test_backward(bottom[0].data, top[0].diff, self.geom, bottom[0].diff)


def _pair(p, name: str, default: int, layer: Layer) -> tuple[int, int]:
    """PoolingParameter's kernel_size/stride/pad are single (not repeated) fields."""
    field = "kernel_size" if name == "kernel" else name
    has_h = p.HasField(f"{name}_h")
    has_w = p.HasField(f"{name}_w")
    if has_h or has_w:
        if p.HasField(field):
            raise layer.config_error(f"give either {field} or {name}_h/{name}_w, not both")
        if not (has_h and has_w):  # the other one would be 0 (a division by zero for stride)
            raise layer.config_error(f"{name}_h and {name}_w must be given together")
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    if p.HasField(field):
        v = int(getattr(p, field))
        return v, v
    return default, default


"""SPP: spatial pyramid pooling, a fixed-length vector from any input size."""
from __future__ import annotations

import math

import numpy as np

from ..kernels.pooling import (
    ave_pool_backward,
    ave_pool_forward,
    make_pool_geom,
    max_pool_backward,
    max_pool_forward,
    pool_out_size,
)
from ..kernels.stochastic_pooling import sto_pool_forward_test, sto_pool_forward_train, sto_pool_test_backward
from ..layer import TRAIN, Layer
from ..registry import register_layer
from ..rng import get_rng

MAX, AVE, STOCHASTIC = 0, 1, 2


def spp_level_geometry(level: int, size: int) -> tuple[int, int]:
    """Caffe's (kernel, pad) along one axis for pyramid level ``level`` (2^level bins).

    kernel = ceil(size / bins); pad = (kernel * bins - size + 1) // 2; the stride is the kernel.
    """
    bins = 2 ** level
    kernel = math.ceil(size / bins)
    remainder = kernel * bins - size
    return kernel, (remainder + 1) // 2


@register_layer("SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling over ``pyramid_height`` levels.

    Bottom: x (N, C, H, W).  Level l (0-based) pools with 2^l bins per axis:
    kernel = stride = ceil(H / 2^l), pad = (kernel 2^l - H + 1) // 2 (likewise for W), using
    Pooling's rules (``pool``: MAX, AVE or STOCHASTIC) and its output size (usually 2^l x 2^l).
    Top: with ``pyramid_height`` 1, the single pooling output (N, C, 1, 1); otherwise the
    levels' outputs flattened per image and concatenated: (N, C * sum_l OH_l OW_l).
    Backward: each level's pooling backward; the bottom gradient is their sum.  No blobs.
    As in Caffe, a level whose pad reaches its kernel (an input too small for 2^l bins) is
    an error.  He, Zhang, Ren & Sun, "Spatial Pyramid Pooling in Deep Convolutional Networks
    for Visual Recognition" (ECCV 2014).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.spp_param
        self.pyramid_height = int(p.pyramid_height)
        if self.pyramid_height < 1:
            raise self.config_error("spp_param.pyramid_height must be given and >= 1")
        self.pool = p.pool
        if self.pool not in (MAX, AVE, STOCHASTIC):
            raise self.config_error(f"unknown pool method {self.pool}; use MAX, AVE or STOCHASTIC")
        self._key = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes != 4:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape}; SPP needs (N, C, H, W)")
        N, C, H, W = x.shape
        if x.shape != self._key:
            self.levels = []
            start = 0
            for level in range(self.pyramid_height):
                kh, ph = spp_level_geometry(level, H)
                kw, pw = spp_level_geometry(level, W)
                if ph >= kh or pw >= kw:
                    raise self.shape_error(
                        f"input '{x.name}' {x.shape} is too small for pyramid level {level} "
                        f"({2 ** level}x{2 ** level} bins): kernel {kh}x{kw} with pad {ph}x{pw}, and "
                        f"pooling needs pad < kernel; use a larger input or a lower pyramid_height"
                    )
                geom = make_pool_geom(H, W, kh, kw, kh, kw, ph, pw)
                any_pad = ph > 0 or pw > 0
                OH, OW = pool_out_size(H, kh, ph, kh, any_pad), pool_out_size(W, kw, pw, kw, any_pad)
                count = C * OH * OW
                self.levels.append({
                    "geom": geom, "shape": (N, C, OH, OW), "start": start, "stop": start + count,
                    "y": np.empty((N, C, OH, OW), np.float32),
                    "mask": np.empty((N, C, OH, OW), np.int32),
                    "uniform": np.empty((N, C, OH, OW), np.float32) if self.pool == STOCHASTIC else None,
                })
                start += count
            self.total = start
            self.dx = np.empty(x.shape, np.float32)
            self._key = x.shape
        if self.pyramid_height == 1:
            top[0].reshape(self.levels[0]["shape"])
        else:
            top[0].reshape(N, self.total)

    def _pool(self, x: np.ndarray, lv: dict) -> None:
        if self.pool == MAX:
            max_pool_forward(x, lv["geom"], lv["y"], lv["mask"])
        elif self.pool == AVE:
            ave_pool_forward(x, lv["geom"], lv["y"])
        elif self.phase == TRAIN:
            get_rng().random(out=lv["uniform"], dtype=np.float32)
            sto_pool_forward_train(x, lv["geom"], lv["uniform"], lv["y"], lv["mask"])
        else:
            sto_pool_forward_test(x, lv["geom"], lv["y"])

    def _unpool(self, x: np.ndarray, lv: dict, top_diff: np.ndarray, out: np.ndarray) -> None:
        if self.pool == AVE:
            ave_pool_backward(top_diff, lv["geom"], out)
        elif self.pool == STOCHASTIC and self.phase != TRAIN:
            sto_pool_test_backward(x, top_diff, lv["geom"], out)
        else:  # MAX, or STOCHASTIC's sampled pixels (same index layout)
            max_pool_backward(top_diff, lv["mask"], lv["geom"], out)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data
        N = x.shape[0]
        y = top[0].data.reshape(N, -1)
        for lv in self.levels:
            self._pool(x, lv)
            y[:, lv["start"]:lv["stop"]] = lv["y"].reshape(N, -1)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        x = bottom[0].data
        N = x.shape[0]
        dy = top[0].diff.reshape(N, -1)
        dx = bottom[0].diff
        for i, lv in enumerate(self.levels):
            lv["y"].reshape(N, -1)[...] = dy[:, lv["start"]:lv["stop"]]  # contiguous copy of the slice
            self._unpool(x, lv, lv["y"], dx if i == 0 else self.dx)
            if i:
                dx += self.dx

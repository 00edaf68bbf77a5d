"""Im2col: the patch-unrolling step of Convolution, exposed as a layer."""
from __future__ import annotations

import numpy as np

from ..kernels.im2col import col2im_batch, conv_out_size, im2col_batch, make_geom
from ..layer import Layer
from ..registry import register_layer
from .deconvolution import conv_geometry


@register_layer("Im2col", v1="IM2COL")
class Im2colLayer(Layer):
    """Unroll every kh x kw patch into a column (Caffe's im2col, batched).

    Bottom: x (N, C, H, W).  Top: y (N, C*kh*kw, OH, OW), OH, OW as for Convolution with the
    same ``convolution_param`` (kernel, stride, pad, dilation; ``num_output`` is not used).
    Forward: y[n, c*kh*kw + i*kw + j, oh, ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    (0 in the padding).  Backward: dx = col2im(dy), the adjoint: each pixel sums the entries
    it was copied to.  No blobs.  Chellapilla, Puri & Simard, "High Performance Convolutional
    Neural Networks for Document Processing" (2006).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        self.g = conv_geometry(self)
        self._key = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes != 4:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape}; Im2col needs (N, C, H, W)")
        g = self.g
        N, C, H, W = x.shape
        OH = conv_out_size(H, g.kh, g.ph, g.sh, g.dh)
        OW = conv_out_size(W, g.kw, g.pw, g.sw, g.dw)
        if OH < 1 or OW < 1:
            raise self.shape_error(
                f"input '{x.name}' {x.shape} is too small for kernel {g.kh}x{g.kw} "
                f"(pad {g.ph}x{g.pw}, dilation {g.dh}x{g.dw}): output would be {OH}x{OW}"
            )
        K = C * g.kh * g.kw
        top[0].reshape(N, K, OH, OW)
        if x.shape != self._key:
            self._key = x.shape
            self.geom = make_geom(C, H, W, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw)
            self.P = OH * OW
            self.col = np.empty((K, N * self.P), np.float32)

    def forward(self, bottom, top) -> None:
        N, K = top[0].shape[:2]
        im2col_batch(bottom[0].data, self.geom, self.col)
        np.copyto(top[0].data.reshape(N, K, self.P), self.col.reshape(K, N, self.P).transpose(1, 0, 2))

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        N, K = top[0].shape[:2]
        np.copyto(self.col.reshape(K, N, self.P), top[0].diff.reshape(N, K, self.P).transpose(1, 0, 2))
        col2im_batch(self.col, self.geom, bottom[0].diff)

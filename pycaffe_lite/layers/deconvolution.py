"""Deconvolution: the transpose of Convolution (Caffe's "backward convolution"), one GEMM per group."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.im2col import col2im_batch, im2col_batch, make_geom
from ..layer import Layer
from ..registry import register_layer
from .convolution import spatial_param


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, stride, pad and dilation of a 2-d ``convolution_param`` (h, w pairs)."""

    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int


def conv_geometry(layer: Layer) -> ConvGeometry:
    """Read and check ``convolution_param``'s 2-d geometry, as Convolution does.

    Shared by Deconvolution and Im2col; raises the layer's config error on bad values.
    """
    p = layer.layer_param.convolution_param
    if p.axis != 1:
        raise layer.config_error(f"axis {p.axis} is not supported; the channel axis must be 1")
    kh, kw = spatial_param(p, "kernel", 0, "kernel_size", layer)
    if kh < 1 or kw < 1:
        raise layer.config_error("kernel_size (or kernel_h and kernel_w) must be given and > 0")
    sh, sw = spatial_param(p, "stride", 1, "stride", layer)
    ph, pw = spatial_param(p, "pad", 0, "pad", layer)
    dil = list(p.dilation)
    if len(dil) > 2:
        raise layer.config_error(f"dilation has {len(dil)} values; 2-d layers take 1 or 2")
    dh, dw = (dil * 2)[:2] if dil else (1, 1)
    if min(sh, sw, dh, dw) < 1:
        raise layer.config_error("stride and dilation must be >= 1")
    return ConvGeometry(kh, kw, sh, sw, ph, pw, int(dh), int(dw))


def deconv_out_size(size: int, k: int, pad: int, stride: int, dilation: int = 1) -> int:
    """Caffe's deconvolution output length: ``stride*(size - 1) + dilation*(k - 1) + 1 - 2*pad``."""
    return stride * (size - 1) + dilation * (k - 1) + 1 - 2 * pad


@register_layer("Deconvolution", v1="DECONVOLUTION")
class DeconvolutionLayer(Layer):
    """2-d transposed convolution ("deconvolution") with padding, stride, dilation and groups.

    Bottom: x (N, C, H, W).  Top: y (N, Cout, OH, OW), Cout = ``num_output``,
    OH = stride (H - 1) + dilation (kh - 1) + 1 - 2 pad  (likewise OW).
    Blobs: W (C, Cout / group, kh, kw) -- Caffe's layout, the transpose of Convolution's, so a
    convolution's weights of shape (C, Cout, kh, kw) run it backwards; b (Cout,) if ``bias_term``.
    Forward: col_g = W_g^T x_g (Cout/group*kh*kw, N*H*W), W_g the C/group rows of group g seen as
    (C/group, Cout/group*kh*kw); y = col2im(col) + b.  Overlapping windows add up.
    Backward: col = im2col(dy); dW_g += x_g col_g^T;  db += sum dy;  dx_g = W_g col_g.
    The convolution geometry of im2col/col2im is that of a convolution from y back to x.
    Zeiler, Taylor & Fergus, "Adaptive deconvolutional networks" (ICCV 2011); used for learned
    upsampling by Long, Shelhamer & Darrell, "Fully Convolutional Networks" (CVPR 2015), whose
    nets fill it with the ``bilinear`` filler.  Several bottoms (each with its own top) share W.
    """

    min_num_bottom = 1
    min_num_top = 1
    equal_num_bottom_top = True

    def setup(self, bottom, top) -> None:
        p = self.layer_param.convolution_param
        if not p.HasField("num_output") or p.num_output < 1:
            raise self.config_error("convolution_param.num_output must be given and > 0")
        if p.connection:
            # the table (LeNet-5's C3) is defined for Convolution's (out, in) filters only; a
            # transposed table would silently mean something else, so refuse it
            raise self.config_error(
                f"convolution_param.connection ({len(p.connection) // 2} pairs) is a Convolution-only "
                "extension (a connection table); Deconvolution does not support it: remove it, or use group "
                "for block-diagonal connections"
            )
        if bottom[0].num_axes != 4:
            raise self.shape_error(
                f"bottom '{bottom[0].name}' has shape {bottom[0].shape}; 2-d deconvolution needs (N, C, H, W)"
            )
        self.g = conv_geometry(self)
        self.group = int(p.group)
        C = bottom[0].shape[1]
        self.num_output = int(p.num_output)
        if self.group < 1 or C % self.group or self.num_output % self.group:
            raise self.config_error(
                f"group {self.group} must divide both the input channels ({C}) and num_output ({self.num_output})"
            )
        self.channels = C
        self.bias_term = p.bias_term
        shapes = [(C, self.num_output // self.group, self.g.kh, self.g.kw)]
        fillers = [p.weight_filler]
        if self.bias_term:
            shapes.append((self.num_output,))
            fillers.append(p.bias_filler)
        self.init_param_blobs(shapes, fillers)
        self._key = None

    def reshape(self, bottom, top) -> None:
        for i, b in enumerate(bottom):
            if b.num_axes != 4 or b.shape[1] != self.channels:
                raise self.shape_error(
                    f"bottom {i} '{b.name}' has shape {b.shape} but the layer was set up for "
                    f"(N, {self.channels}, H, W)"
                )
            if b.shape != bottom[0].shape:
                raise self.shape_error(f"all bottoms must have the same shape; got {bottom[0].shape} and {b.shape}")
        g = self.g
        N, C, H, W = bottom[0].shape
        OH = deconv_out_size(H, g.kh, g.ph, g.sh, g.dh)
        OW = deconv_out_size(W, g.kw, g.pw, g.sw, g.dw)
        if OH < 1 or OW < 1:
            raise self.shape_error(
                f"input '{bottom[0].name}' {bottom[0].shape} gives an empty output {OH}x{OW} for kernel "
                f"{g.kh}x{g.kw}, stride {g.sh}x{g.sw}, pad {g.ph}x{g.pw}, dilation {g.dh}x{g.dw}; reduce the pad"
            )
        for t in top:
            t.reshape(N, self.num_output, OH, OW)
        key = (N, C, H, W)
        if key != self._key:
            self._key = key
            # im2col's "image" is the top; its "convolution output" is the bottom's H x W.
            self.geom = make_geom(self.num_output, OH, OW, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw)
            self.P = H * W
            K = self.num_output * g.kh * g.kw
            self.col = np.empty((K, N * self.P), np.float32)
            self.x2 = np.empty((C, N * self.P), np.float32)
            self.weight_tmp = np.empty((K // self.group, C // self.group), np.float32)
            self.dx2 = np.empty((C, N * self.P), np.float32)

    def _to_channel_major(self, arr: np.ndarray, out: np.ndarray) -> None:
        """(N, C, H, W) -> (C, N*H*W): the GEMM layout, one copy."""
        N = arr.shape[0]
        np.copyto(out.reshape(self.channels, N, self.P), arr.reshape(N, self.channels, self.P).transpose(1, 0, 2))

    def forward(self, bottom, top) -> None:
        G = self.group
        Cg = self.channels // G
        Kg = self.col.shape[0] // G
        W2 = self.blobs[0].data.reshape(self.channels, Kg)
        for b, t in zip(bottom, top):
            self._to_channel_major(b.data, self.x2)
            for g in range(G):
                np.matmul(W2[g * Cg:(g + 1) * Cg].T, self.x2[g * Cg:(g + 1) * Cg], out=self.col[g * Kg:(g + 1) * Kg])
            col2im_batch(self.col, self.geom, t.data)
            if self.bias_term:
                t.data += self.blobs[1].data[None, :, None, None]

    def backward(self, top, propagate_down, bottom) -> None:
        N = bottom[0].shape[0]
        G = self.group
        Cg = self.channels // G
        Kg = self.col.shape[0] // G
        W2 = self.blobs[0].data.reshape(self.channels, Kg)
        dW2 = self.blobs[0].diff.reshape(self.channels, Kg)
        need_w = self.param_propagate_down[0]
        for i, (t, b) in enumerate(zip(top, bottom)):
            if self.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += t.diff.sum(axis=(0, 2, 3), dtype=np.float32)
            if not (need_w or propagate_down[i]):
                continue
            im2col_batch(t.diff, self.geom, self.col)
            if need_w:
                self._to_channel_major(b.data, self.x2)
                for g in range(G):
                    # dW_g^T = col_g x_g^T, the wide matrix first: on an idle machine as fast as
                    # x_g col_g^T (2.5 vs 2.9 ms, 32 -> 32 channels, kernel 4, batch 16 of 28x28),
                    # and while other processes loaded both cores it stayed at ~27 ms where the
                    # narrow-first form (Convolution's) spiked to ~325 ms (OpenBLAS, 2 threads).
                    np.matmul(self.col[g * Kg:(g + 1) * Kg], self.x2[g * Cg:(g + 1) * Cg].T, out=self.weight_tmp)
                    dW2[g * Cg:(g + 1) * Cg] += self.weight_tmp.T
            if propagate_down[i]:
                for g in range(G):
                    np.matmul(W2[g * Cg:(g + 1) * Cg], self.col[g * Kg:(g + 1) * Kg], out=self.dx2[g * Cg:(g + 1) * Cg])
                np.copyto(b.diff.reshape(N, self.channels, self.P),
                          self.dx2.reshape(self.channels, N, self.P).transpose(1, 0, 2))

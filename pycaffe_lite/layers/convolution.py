"""Convolution (2-d spatial), as one GEMM per group over the whole batch."""
from __future__ import annotations

import threading

import numpy as np

from ..kernels.im2col import col2im_batch, conv_out_size, im2col_batch, make_geom
from ..layer import TRAIN, Layer
from ..registry import register_layer


class _Workspace(threading.local):
    """Scratch arrays shared by the layers of every net in a thread: layers run one at a time,
    so one buffer per slot, as large as the largest request, serves them all."""

    def __init__(self) -> None:
        self.slots: dict[int, np.ndarray] = {}


_WORKSPACE = _Workspace()

#: TEST-phase forward builds the columns of this many bytes' worth of images at a time
TEST_COLUMN_BYTES = 4 << 20


def workspace(slot: int, n: int) -> np.ndarray:
    """A float32 scratch vector of ``n`` elements, valid until the next request for ``slot``."""
    buf = _WORKSPACE.slots.get(slot)
    if buf is None or buf.size < n:
        buf = _WORKSPACE.slots[slot] = np.empty(n, np.float32)
    return buf[:n]


def spatial_param(p, name: str, default: int, desc: str, layer: Layer) -> tuple[int, int]:
    """Read Caffe's ``<name>`` (repeated, 1 or 2 values) or ``<name>_h``/``<name>_w`` pair."""
    values = list(getattr(p, name if name != "kernel" else "kernel_size", []))
    has_h = p.HasField(f"{name}_h")
    has_w = p.HasField(f"{name}_w")
    if has_h or has_w:
        if values:
            raise layer.config_error(f"give either {desc} or {name}_h/{name}_w, not both")
        if not (has_h and has_w) and name != "pad":  # pads default to 0; a kernel or stride has no default
            raise layer.config_error(f"{name}_h and {name}_w must be given together")
        return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise layer.config_error(f"{desc} has {len(values)} values; 2-d convolution takes 1 or 2")


@register_layer("Convolution", v1="CONVOLUTION")
class ConvolutionLayer(Layer):
    """2-d convolution with zero padding, stride, dilation and groups.

    Bottom: x (N, C, H, W).  Top: y (N, Cout, OH, OW),
    OH = floor((H + 2 pad - dilation (k - 1) - 1) / stride) + 1.
    Blobs: W (Cout, C / group, kh, kw); b (Cout,) if ``bias_term``.
    Forward: col = im2col(x) (K, N*OH*OW), K = C/group*kh*kw; y_g = W_g col_g + b.
    Backward: dW_g += dy_g col_g^T;  db += sum dy;  dx = col2im(W_g^T dy_g).
    LeCun et al. 1998; Caffe's im2col formulation (Chellapilla et al. 2006).
    Several bottoms may be given (each with its own top); they share the weights.

    Connection table (extension ``convolution_param.connection``, flattened (input channel,
    output channel) pairs; LeNet-5's C3): output o reads input i only if (i, o) is listed.
    W keeps Caffe's dense shape (Cout, C, kh, kw) and a 0/1 mask M over (Cout, C) holds the
    unlisted filters at zero: forward uses W * M, and backward gives dW += (dy col^T) * M and
    dx from W * M, so those weights never move. ``group`` g is the block-diagonal table.
    """

    min_num_bottom = 1
    min_num_top = 1
    equal_num_bottom_top = True

    def setup(self, bottom, top) -> None:
        p = self.layer_param.convolution_param
        if not p.HasField("num_output") or p.num_output < 1:
            raise self.config_error("convolution_param.num_output must be given and > 0")
        if p.axis != 1:
            raise self.config_error(f"axis {p.axis} is not supported; the channel axis must be 1")
        if bottom[0].num_axes != 4:
            raise self.shape_error(
                f"bottom '{bottom[0].name}' has shape {bottom[0].shape}; 2-d convolution needs (N, C, H, W)"
            )
        self.kh, self.kw = spatial_param(p, "kernel", 0, "kernel_size", self)
        if self.kh < 1 or self.kw < 1:
            raise self.config_error("kernel_size (or kernel_h and kernel_w) must be given and > 0")
        self.sh, self.sw = spatial_param(p, "stride", 1, "stride", self)
        self.ph, self.pw = spatial_param(p, "pad", 0, "pad", self)
        dil = list(p.dilation)
        if len(dil) > 2:
            raise self.config_error(f"dilation has {len(dil)} values; 2-d convolution takes 1 or 2")
        self.dh, self.dw = (dil * 2)[:2] if dil else (1, 1)
        if min(self.sh, self.sw, self.dh, self.dw) < 1 or min(self.ph, self.pw) < 0:
            raise self.config_error("stride and dilation must be >= 1 and pad >= 0")
        self.group = int(p.group)
        C = bottom[0].shape[1]
        self.num_output = int(p.num_output)
        if self.group < 1 or C % self.group or self.num_output % self.group:
            raise self.config_error(
                f"group {self.group} must divide both the input channels ({C}) and num_output ({self.num_output})"
            )
        self.channels = C
        self.bias_term = p.bias_term
        shapes = [(self.num_output, C // self.group, self.kh, self.kw)]
        fillers = [p.weight_filler]
        if self.bias_term:
            shapes.append((self.num_output,))
            fillers.append(p.bias_filler)
        self.init_param_blobs(shapes, fillers)
        self._key = None
        #: (Cout, C) bool: which filters exist (None: every one, the usual convolution)
        self.connection_mask = self._connection_table(p, C)
        if self.connection_mask is not None:
            mask = self.connection_mask.astype(np.float32)
            self.blobs[0].data[...] *= mask[:, :, None, None]
            # the mask in W's 2-d (Cout, C*kh*kw) layout, and scratch for W * M and dW * M
            self._mask2d = np.repeat(mask, self.kh * self.kw, axis=1)
            self._masked_w = np.empty_like(self._mask2d)
            self._masked_dw = np.empty_like(self._mask2d)

    def _connection_table(self, p, C: int) -> np.ndarray | None:
        pairs = [int(v) for v in p.connection]
        if not pairs:
            return None
        if self.group != 1:
            raise self.config_error(
                f"give either a connection table or group ({self.group}), not both; a block-diagonal "
                "table is what group does"
            )
        if len(pairs) % 2:
            raise self.config_error(
                f"connection has {len(pairs)} values; it lists (input channel, output channel) pairs, "
                "so the count must be even"
            )
        mask = np.zeros((self.num_output, C), bool)
        for i, o in zip(pairs[0::2], pairs[1::2]):
            if i >= C or o >= self.num_output:
                raise self.config_error(
                    f"connection pair ({i}, {o}) is out of range: input channels 0..{C - 1}, "
                    f"output channels 0..{self.num_output - 1}"
                )
            if mask[o, i]:
                raise self.config_error(f"connection pair ({i}, {o}) is listed twice")
            mask[o, i] = True
        unfed = np.flatnonzero(~mask.any(axis=1))
        if unfed.size:
            raise self.config_error(
                f"output channel(s) {', '.join(map(str, unfed))} have no input in the connection table"
            )
        return mask

    def reshape(self, bottom, top) -> None:
        for i, b in enumerate(bottom):
            if b.num_axes != 4 or b.shape[1] != self.channels:
                raise self.shape_error(
                    f"bottom {i} '{b.name}' has shape {b.shape} but the layer was set up for "
                    f"(N, {self.channels}, H, W)"
                )
            if b.shape != bottom[0].shape:
                raise self.shape_error(f"all bottoms must have the same shape; got {bottom[0].shape} and {b.shape}")
        N, C, H, W = bottom[0].shape
        OH = conv_out_size(H, self.kh, self.ph, self.sh, self.dh)
        OW = conv_out_size(W, self.kw, self.pw, self.sw, self.dw)
        if OH < 1 or OW < 1:
            raise self.shape_error(
                f"input '{bottom[0].name}' {bottom[0].shape} is too small for kernel {self.kh}x{self.kw} "
                f"(pad {self.ph}x{self.pw}, dilation {self.dh}x{self.dw}): output would be {OH}x{OW}"
            )
        for t in top:
            t.reshape(N, self.num_output, OH, OW)
        key = (N, C, H, W)
        if key != self._key:
            self._key = key
            self.geom = make_geom(C, H, W, self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw)
            self.P = OH * OW
            self.K = C * self.kh * self.kw
            # TRAIN keeps forward's columns for the weight gradient; TEST borrows a shared buffer
            # (backward, if it ever runs, rebuilds them).  Forward's GEMM output and backward's
            # top diff in GEMM layout are transient, so every layer borrows that buffer too.
            self.col = np.empty((self.K, N * self.P), np.float32) if self.phase == TRAIN else None
            self._col_valid = False  # does col hold im2col(bottom[0].data)?

    def _columns(self, N: int) -> np.ndarray:
        if self.col is not None:
            return self.col
        return workspace(1, self.K * N * self.P).reshape(self.K, N * self.P)

    def _gemm_out(self, N: int) -> np.ndarray:
        return workspace(0, self.num_output * N * self.P).reshape(self.num_output, N * self.P)

    def _weights2d(self, arr: np.ndarray) -> np.ndarray:
        return arr.reshape(self.num_output, -1)

    def forward(self, bottom, top) -> None:
        N = bottom[0].shape[0]
        W2 = self._weights2d(self.blobs[0].data)
        if self.connection_mask is not None:
            W2 = np.multiply(W2, self._mask2d, out=self._masked_w)
        # TRAIN: one GEMM over the whole batch, keeping the columns for backward.  TEST: the
        # columns are transient, so a few images at a time (at most TEST_COLUMN_BYTES of them):
        # the scratch stays small (CaffeNet conv1 at batch 10: 4 MB instead of 44 MB).
        step = N if self.col is not None else max(1, min(N, TEST_COLUMN_BYTES // (4 * self.K * self.P)))
        for b, t in zip(bottom, top):
            y = t.data.reshape(N, self.num_output, self.P)
            for n0 in range(0, N, step):
                n1 = min(N, n0 + step)
                self._forward_images(W2, b.data[n0:n1], y[n0:n1])
        self._col_valid = len(bottom) == 1 and self.col is not None

    def _forward_images(self, W2: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """y (n, Cout, P) = conv(x (n, C, H, W)), through columns and one GEMM per group."""
        n = x.shape[0]
        G = self.group
        Kg = self.K // G
        Og = self.num_output // G
        col, out = self._columns(n), self._gemm_out(n)
        im2col_batch(x, self.geom, col)
        for g in range(G):
            np.matmul(W2[g * Og:(g + 1) * Og], col[g * Kg:(g + 1) * Kg], out=out[g * Og:(g + 1) * Og])
        np.copyto(y, out.reshape(self.num_output, n, self.P).transpose(1, 0, 2))
        if self.bias_term:
            y += self.blobs[1].data[None, :, None]

    def backward(self, top, propagate_down, bottom) -> None:
        N = bottom[0].shape[0]
        G = self.group
        Kg = self.K // G
        Og = self.num_output // G
        W2 = self._weights2d(self.blobs[0].data)
        if self.connection_mask is not None:
            W2 = np.multiply(W2, self._mask2d, out=self._masked_w)
        dW2 = self._weights2d(self.blobs[0].diff)
        col, top_diff = self._columns(N), self._gemm_out(N)
        for i, (t, b) in enumerate(zip(top, bottom)):
            np.copyto(top_diff.reshape(self.num_output, N, self.P),
                      t.diff.reshape(N, self.num_output, self.P).transpose(1, 0, 2))
            if self.bias_term and self.param_propagate_down[1]:
                self.blobs[1].diff += top_diff.sum(axis=1)
            if self.param_propagate_down[0]:
                if not self._col_valid:  # forward's columns are gone (TEST, several bottoms, spent)
                    im2col_batch(b.data, self.geom, col)
                if self.connection_mask is not None:  # G == 1
                    np.matmul(top_diff, col.T, out=self._masked_dw)
                    self._masked_dw *= self._mask2d
                    dW2 += self._masked_dw
                else:
                    for g in range(G):
                        dW2[g * Og:(g + 1) * Og] += top_diff[g * Og:(g + 1) * Og] @ col[g * Kg:(g + 1) * Kg].T
            if propagate_down[i]:
                # The columns are spent once dW has them: their buffer takes W^T dy.
                self._col_valid = False
                for g in range(G):
                    np.matmul(W2[g * Og:(g + 1) * Og].T, top_diff[g * Og:(g + 1) * Og],
                              out=col[g * Kg:(g + 1) * Kg])
                col2im_batch(col, self.geom, b.diff)

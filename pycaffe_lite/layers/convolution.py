"""Convolution (2-d spatial), a chunk of images at a time: columns (or rows) that stay in cache
and one GEMM per chunk and group."""
from __future__ import annotations

import threading

import numpy as np

from ..kernels.im2col import (
    col2im_batch,
    conv_out_size,
    im2col_batch,
    im2row_nhwc,
    make_geom,
    row2im_nhwc,
)
from ..layer import Layer
from ..registry import register_layer


class _Workspace(threading.local):
    """Scratch arrays shared by the layers of every net in a thread: layers run one at a time,
    so one buffer per slot, as large as the largest request, serves them all."""

    def __init__(self) -> None:
        self.slots: dict[int, np.ndarray] = {}


_WORKSPACE = _Workspace()

#: Forward and backward build the columns (or rows) of this many bytes' worth of images at a
#: time (one image at least), so they are still in cache when the GEMM reads them.  Measured at
#: CIFAR-10 quick's and LeNet's shapes, 1 thread: 1, 2 and 4 MB chunks all beat the whole batch
#: (82 MB of columns for conv2 at batch 100, streamed through memory), 4 MB by 3-10% over 1 MB
#: (longer GEMMs, fewer calls).
CHUNK_BYTES = 4 << 20

#: Channels-last rows (``im2row_nhwc``: one copy of kw*C floats per kernel row) when a kernel
#: row holds at least this many floats and group == 1; else Caffe's columns (rows of OH*OW
#: pixels), which win when there are few channels (C = 1 or 3 at the nets' first layers).
NHWC_MIN_RUN = 40


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
    Computed a chunk of images at a time (``CHUNK_BYTES`` of columns), so the columns are
    built, multiplied and dropped while in cache.  With many channels (kw*C >= ``NHWC_MIN_RUN``)
    and group 1 the chunk goes channels-last instead: rows = im2row(x as NHWC) (n*P, K) in
    (i, j, c) order and y^T = rows W'^T with W' the weights in that order, whose GEMM runs
    faster at these shapes (and its im2row copies kw*C floats at a time); the blobs stay NCHW.
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
        Cg = C // self.group
        self._w_nhwc = np.empty((self.num_output, self.kh * self.kw, Cg), np.float32)
        self._dw_acc = np.empty((self.num_output, Cg * self.kh * self.kw), np.float32)
        self._dw_tmp = np.empty_like(self._dw_acc)
        self._dwT_tmp = np.empty((Cg * self.kh * self.kw, self.num_output), np.float32)
        self._db_acc = np.zeros(self.num_output, np.float32)
        #: (Cout, C) bool: which filters exist (None: every one, the usual convolution)
        self.connection_mask = self._connection_table(p, C)
        if self.connection_mask is not None:
            mask = self.connection_mask.astype(np.float32)
            self.blobs[0].data[...] *= mask[:, :, None, None]
            # the mask in W's 2-d (Cout, C*kh*kw) layout, and scratch for W * M
            self._mask2d = np.repeat(mask, self.kh * self.kw, axis=1)
            self._masked_w = np.empty_like(self._mask2d)

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
            self.nhwc = self.group == 1 and self.kw * C >= NHWC_MIN_RUN
            self.step = max(1, min(N, CHUNK_BYTES // (4 * self.K * self.P)))

    def _weights2d(self, arr: np.ndarray) -> np.ndarray:
        return arr.reshape(self.num_output, -1)

    def _masked_weights(self) -> np.ndarray:
        """W (Cout, K/group) as used: times the connection mask if there is one."""
        W2 = self._weights2d(self.blobs[0].data)
        if self.connection_mask is not None:
            W2 = np.multiply(W2, self._mask2d, out=self._masked_w)
        return W2

    def _channels_last(self, W2: np.ndarray) -> np.ndarray:
        """W2 (Cout, C*kh*kw) reordered to (Cout, kh*kw*C), the column order of im2row_nhwc."""
        O = self.num_output
        np.copyto(self._w_nhwc, W2.reshape(O, self.channels, -1).transpose(0, 2, 1))
        return self._w_nhwc.reshape(O, -1)

    def forward(self, bottom, top) -> None:
        N = bottom[0].shape[0]
        W2 = self._masked_weights()
        if self.nhwc:
            W2 = self._channels_last(W2)
        for b, t in zip(bottom, top):
            y = t.data.reshape(N, self.num_output, self.P)
            for n0 in range(0, N, self.step):
                n1 = min(N, n0 + self.step)
                if self.nhwc:
                    self._forward_rows(W2, b.data[n0:n1], y[n0:n1])
                else:
                    self._forward_columns(W2, b.data[n0:n1], y[n0:n1])
                if self.bias_term:
                    y[n0:n1] += self.blobs[1].data[None, :, None]  # while the chunk is in cache

    def _forward_rows(self, Wh: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """y (n, Cout, P) = conv(x (n, C, H, W)) through channels-last rows: one GEMM (n*P, K) x (K, Cout)."""
        n, C, H, W = x.shape
        P, K, O = self.P, self.K, self.num_output
        xh = workspace(2, x.size).reshape(n, H, W, C)
        np.copyto(xh, x.transpose(0, 2, 3, 1))
        rows = workspace(1, n * P * K).reshape(n * P, K)
        out = workspace(0, n * P * O).reshape(n * P, O)
        im2row_nhwc(xh, self.geom, rows)
        np.matmul(rows, Wh.T, out=out)
        np.copyto(y, out.reshape(n, P, O).transpose(0, 2, 1))

    def _forward_columns(self, W2: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """y (n, Cout, P) = conv(x (n, C, H, W)), through columns and one GEMM per group."""
        n = x.shape[0]
        G, P = self.group, self.P
        Kg, Og = self.K // G, self.num_output // G
        col = workspace(1, self.K * n * P).reshape(self.K, n * P)
        im2col_batch(x, self.geom, col)
        if G == 1:
            # straight into y, image by image (one stacked matmul over column blocks): faster
            # than one GEMM into scratch plus a transposing copy (0.25 vs 0.29 ms, LeNet conv1)
            np.matmul(W2, col.reshape(self.K, n, P).transpose(1, 0, 2), out=y)
            return
        out = workspace(0, self.num_output * n * P).reshape(self.num_output, n * P)
        for g in range(G):
            np.matmul(W2[g * Og:(g + 1) * Og], col[g * Kg:(g + 1) * Kg], out=out[g * Og:(g + 1) * Og])
        np.copyto(y, out.reshape(self.num_output, n, P).transpose(1, 0, 2))

    def backward(self, top, propagate_down, bottom) -> None:
        N = bottom[0].shape[0]
        O = self.num_output
        W2 = self._masked_weights()
        if self.nhwc:
            W2 = self._channels_last(W2)
        need_w = bool(self.param_propagate_down[0])
        need_b = self.bias_term and bool(self.param_propagate_down[1])
        self._dw_acc[...] = 0
        self._db_acc[...] = 0
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff.reshape(N, O, self.P)
            for n0 in range(0, N, self.step):
                n1 = min(N, n0 + self.step)
                args = (W2, b.data[n0:n1], dy[n0:n1], b.diff[n0:n1], bool(propagate_down[i]), need_w, need_b)
                if self.nhwc:
                    self._backward_rows(*args)
                else:
                    self._backward_columns(*args)
        if need_w:
            khkw = self.kh * self.kw
            Cg = self.channels // self.group
            acc = self._dw_acc.reshape(O, khkw, Cg).transpose(0, 2, 1) if self.nhwc else self._dw_acc.reshape(O, Cg, khkw)
            if self.connection_mask is not None:  # the unlisted filters never move
                acc = acc * self._mask2d.reshape(O, Cg, khkw)
            self.blobs[0].diff.reshape(O, Cg, khkw)[...] += acc
        if need_b:
            self.blobs[1].diff += self._db_acc

    def _backward_rows(self, Wh, x, dy, dx, need_x: bool, need_w: bool, need_b: bool) -> None:
        """One chunk of images through channels-last rows: dW += dy^T rows, dx = row2im(dy Wh)."""
        n, C, H, W = x.shape
        P, K, O = self.P, self.K, self.num_output
        d = workspace(0, n * P * O).reshape(n * P, O)
        np.copyto(d.reshape(n, P, O), dy.transpose(0, 2, 1))
        if need_b:
            self._db_acc += dy.sum(axis=(0, 2))  # ~3x faster than the column sums of d
        rows = workspace(1, n * P * K).reshape(n * P, K)
        if need_w:
            xh = workspace(2, x.size).reshape(n, H, W, C)
            np.copyto(xh, x.transpose(0, 2, 3, 1))
            im2row_nhwc(xh, self.geom, rows)
            np.matmul(d.T, rows, out=self._dw_tmp)
            self._dw_acc += self._dw_tmp
        if need_x:
            np.matmul(d, Wh, out=rows)
            dxh = workspace(3, x.size).reshape(n, H, W, C)
            row2im_nhwc(rows, self.geom, dxh)
            np.copyto(dx, dxh.transpose(0, 3, 1, 2))

    def _backward_columns(self, W2, x, dy, dx, need_x: bool, need_w: bool, need_b: bool) -> None:
        """One chunk of images through columns: dW_g^T += col_g dy_g^T, dx = col2im(W_g^T dy_g).

        dW^T = col (K, n*P) x dy^T ran ~1.5x faster than dW = dy (Cout, n*P) x col^T at conv1's
        shapes (K = 25 or 75); dy itself stays (Cout, n*P), whose copy from (n, Cout, P) is cheap.
        """
        n = x.shape[0]
        G, P, O = self.group, self.P, self.num_output
        Kg, Og = self.K // G, O // G
        d = workspace(0, O * n * P).reshape(O, n * P)
        np.copyto(d.reshape(O, n, P), dy.transpose(1, 0, 2))
        if need_b:
            self._db_acc += d.sum(axis=1)
        col = workspace(1, self.K * n * P).reshape(self.K, n * P)
        if need_w:
            im2col_batch(x, self.geom, col)
            if G == 1:
                np.matmul(col, d.T, out=self._dwT_tmp)
                self._dw_acc += self._dwT_tmp.T
            else:
                for g in range(G):
                    gO = slice(g * Og, (g + 1) * Og)
                    self._dw_acc[gO] += (col[g * Kg:(g + 1) * Kg] @ d[gO].T).T
        if need_x:
            for g in range(G):
                gO = slice(g * Og, (g + 1) * Og)
                np.matmul(W2[gO].T, d[gO], out=col[g * Kg:(g + 1) * Kg])
            col2im_batch(col, self.geom, dx)

"""Convolution (2-d spatial), a chunk of images at a time: columns (or rows) that stay in cache
and one GEMM per chunk and group."""
from __future__ import annotations

import sys
import threading

import numba
import numpy as np

from .._split import run_halves
from .._threads import SerialBlas, available_cpus, blas_libs
from ..blob import aligned_zeros
from ..kernels.conv_wgrad import shift_offsets, wgrad_accumulate, wgrad_shifted_accumulate
from ..kernels.direct_conv import (
    OBLOCK,
    SLACK,
    add_packed_gradient,
    conv_backward_chunks,
    conv_forward_chunks,
    pack_filters,
    pack_rotated_filters,
    wgrad_blocks,
)
from ..kernels.direct_conv import TILE as DIRECT_TILE
from ..kernels.im2col import (
    col2im_batch,
    col2im_serial,
    conv_out_size,
    im2col_batch,
    im2col_serial,
    im2row_nhwc,
    im2row_nhwc_serial,
    make_geom,
    row2im_nhwc,
    row2im_nhwc_serial,
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

#: Two halves of the batch at once, one on the calling thread and one on pycaffe_lite/_split.py's
#: worker, each with one BLAS thread and the serial (GIL-free) kernels, when two threads are
#: wanted and free (see :func:`_split_at`).  BLAS's own threads scale poorly on these products
#: (few output channels: M = 20-64), the parallel kernels wake their threads at every call,
#: and the copies and bias sums between them run on one core; the halves overlap all of it and
#: meet once per pass.  Measured 1 -> 2 threads (benchmarks/peers.py --sections threads, side by
#: side with the one-chunk-after-another path, load ~1.3): LeNet train 1.48-1.50x (was 1.20-1.21),
#: CIFAR-10 quick train 1.72x (1.29-1.33), CaffeNet forward 1.62-1.65x (1.50-1.59); LeNet at two
#: threads 6.2-6.9 ms per iteration (7.7-7.9).  With the other core busy the caller takes the
#: worker's half back when the worker has not started it (pycaffe_lite/_split.py): the layers
#: then ran at 0.93-0.99x their one-thread speed, where BLAS's own threads took 1.4-120x
#: longer (benchmarks/conv_threads.py).  A module attribute, so tests and benchmarks can
#: switch it off.
SPLIT_BATCH = True
#: Columns (or rows) per chunk on each of the two threads (None: half of ``CHUNK_BYTES``, so
#: that the two chunks in flight fill the scratch of one one-thread chunk: the split costs no
#: memory, and LeNet's training RSS stays at 40-41 MB over the baseline instead of 47 MB).
SPLIT_CHUNK_BYTES: int | None = None
#: Weight gradients with at most this many outputs per group (Cout/group x K/group) are summed
#: by kernels/conv_wgrad.py instead of BLAS (0: always BLAS).  Measured at one thread: LeNet's
#: conv1 (20 x 25 over 64 images) 0.31-0.39 ms against 0.51 ms for ``col @ d.T``, and 0.17-0.19
#: against 0.25 ms for half the batch; CIFAR-10 quick's conv1 (32 x 75 = 2400) lost (0.62 against
#: 0.47 ms), so BLAS keeps the larger outputs.  Tests may set it.
WGRAD_KERNEL_MAX = 1024
#: Stride 1, no pad, group 1 and patches of at most this many floats (C*kh*kw): the weight
#: gradient straight from the image (kernels/conv_wgrad.py wgrad_shifted_accumulate), no columns
#: (0: never).  Measured at one thread, LeNet conv1's 64 images: 0.36-0.38 ms against 0.54-0.56
#: ms for the dy copy + im2col + wgrad_accumulate it replaces (alternating in one process).
SHIFTED_WGRAD_MAX_K = 32
def _wide_vectors() -> bool:
    """Whether Numba compiles for a CPU with AVX-512 (the host's, unless NUMBA_CPU_NAME or
    NUMBA_CPU_FEATURES say otherwise)."""
    from numba.core import config

    try:
        if config.CPU_FEATURES:
            return "+avx512f" in config.CPU_FEATURES.split(",")
        if config.CPU_NAME and config.CPU_NAME != "host":
            return False
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get("avx512f"))
    except Exception:  # noqa: BLE001 - no feature list: assume none
        return False


#: Direct convolution (kernels/direct_conv.py: no columns, register tiles of 8 pixels x 32
#: channels) for stride-1, undilated, group-1 layers whose output rows come in tiles of 8, in the
#: forward pass when padding the output channels to blocks of 32 wastes at most
#: ``DIRECT_MAX_PAD`` of the work; backward too when the output channels are whole blocks and the
#: patches hold at least ``DIRECT_MIN_K`` floats (the input gradient also needs input channels in
#: blocks of 32, an input row in tiles of 8 and pad < kernel).  Measured at one thread on half a
#: batch: CIFAR-10 quick's conv2 forward 2.65 ms (247 GFLOP/s) where the rows and GEMM took ~5 ms
#: at two threads for the whole batch; weight gradient 209 GFLOP/s, input gradient 259; LeNet's
#: conv1 forward 0.14 ms for 32 images (20 channels padded to 32) against ~0.2 through columns,
#: conv2 0.53 (50 padded to 64) against ~0.48.  On by default only where Numba generates AVX-512
#: code (32 vector registers of 16 floats: the tile's 16 accumulators, two weight vectors and a
#: broadcast fit); elsewhere LLVM would split each vector in two or four and spill the tile, and
#: the column path (BLAS) stays.  False: never (tests may set it).
DIRECT = _wide_vectors()
DIRECT_MIN_K = 64
DIRECT_MAX_PAD = 1.6
#: Images per chunk on the direct path: the padded input and top diff of this many bytes' worth
#: of images, so that the weight gradient's tiles, each of which runs over the whole chunk, read
#: them from cache.
DIRECT_CHUNK_BYTES = 512 << 10
#: usable CPUs (None: looked up on first use); tests may set it
_CPUS: int | None = None


def _blas_threads_sleep() -> bool:
    """Whether OpenBLAS's idle threads sleep rather than spin: pycaffe_lite/_threads.py sets
    OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS, unless NumPy was imported first (a
    script's ``import numpy`` before ``import pycaffe_lite``) and the variable was not in the
    process's environment from the start.  With spinning threads (left over from the other
    layers' two-thread products) the halves share the second core with a spinner: LeNet at two
    threads took 9.5 ms split against 8.1 ms with BLAS's threads, so then the split stays off."""
    names = list(sys.modules)
    if "numpy" not in names or "pycaffe_lite._threads" not in names:
        return True
    if names.index("pycaffe_lite._threads") < names.index("numpy"):
        return True
    try:
        with open("/proc/self/environ", "rb") as f:  # the environment the process started with
            return any(v.startswith(b"OPENBLAS_THREAD_TIMEOUT=") for v in f.read().split(b"\0"))
    except OSError:
        return False


#: whether the split may run at all in this process (see _blas_threads_sleep); tests may set it
_BLAS_IDLE_SLEEPS = _blas_threads_sleep()

#: (im2col, col2im, im2row, row2im): the whole-batch kernels use Numba's threads; the serial ones
#: run on the calling thread without the GIL, one set per half of a split batch.
_PARALLEL = (im2col_batch, col2im_batch, im2row_nhwc, row2im_nhwc)
_SERIAL = (im2col_serial, col2im_serial, im2row_nhwc_serial, row2im_nhwc_serial)


def _split_at(N: int) -> int:
    """Where a batch of ``N`` images is cut in two halves for two threads, or 0 for one thread:
    when the batch splitting is on, two or more CPUs are usable, and both Numba and BLAS are
    asked for two threads or more.  BLAS on one thread means ``threads == 1`` or the busy-machine
    guard (pycaffe_lite/_threads.py) holding it there: then today's one-thread path.  Without
    threadpoolctl BLAS cannot be held to one thread per half, and with OpenBLAS's idle threads
    spinning (:func:`_blas_threads_sleep`) the halves would share a core, so no split either."""
    global _CPUS
    if not SPLIT_BATCH or N < 2 or not _BLAS_IDLE_SLEEPS:
        return 0
    if _CPUS is None:
        _CPUS = available_cpus()
    if _CPUS < 2 or numba.get_num_threads() < 2:
        return 0
    libs = blas_libs()
    if not libs or any(lib.get_num_threads() < 2 for lib in libs):
        return 0
    return (N + 1) // 2


def workspace(slot: int, n: int) -> np.ndarray:
    """A float32 scratch vector of ``n`` elements, valid until the next request for ``slot``."""
    buf = _WORKSPACE.slots.get(slot)
    if buf is None or buf.size < n:
        buf = _WORKSPACE.slots[slot] = aligned_zeros(n, zero=False)
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
    With two threads wanted and free (:func:`_split_at`) the batch is cut in two halves run at
    once, each chunk by chunk on its own thread with one-thread BLAS and the serial kernels; each
    half sums its weight gradient into its own buffer and the two are added at the end.
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
        # gradient accumulators and scratch, one of each per half of a split batch ([0] alone
        # on one thread): each half sums its chunks into its own, then the two are added
        self._dw_acc = np.empty((2, self.num_output, Cg * self.kh * self.kw), np.float32)
        self._dw_tmp = np.empty_like(self._dw_acc)
        self._dwT_tmp = np.empty((2, Cg * self.kh * self.kw, self.num_output), np.float32)
        self._db_acc = np.zeros((2, self.num_output), np.float32)
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
            self.shifted = (self.group == 1 and self.sh == self.sw == 1 and self.ph == self.pw == 0
                            and self.K <= SHIFTED_WGRAD_MAX_K and self.num_output * self.K <= WGRAD_KERNEL_MAX)
            self._plan_direct(N, C, H, W, OH, OW)
            if self.shifted:  # the patch offsets into an image and one widened dy per half
                self._offsets = shift_offsets(C, H, W, self.kh, self.kw, self.dh, self.dw)
                self._wide = np.empty((2, self.num_output, OH * W), np.float32)

    def _plan_direct(self, N: int, C: int, H: int, W: int, OH: int, OW: int) -> None:
        """Whether this shape takes the direct path (see ``DIRECT``) and its buffers' sizes."""
        O = self.num_output
        Opad = -(-O // OBLOCK) * OBLOCK
        plain = self.group == 1 and self.sh == self.sw == 1 and self.dh == self.dw == 1
        self.direct = (DIRECT and not numba.config.DISABLE_JIT and plain and OW % DIRECT_TILE == 0
                       and Opad <= DIRECT_MAX_PAD * O)
        self.direct_bwd = self.direct and self.K >= DIRECT_MIN_K
        self.direct_dx = (self.direct_bwd and C % OBLOCK == 0 and W % DIRECT_TILE == 0
                          and self.ph < self.kh and self.pw < self.kw)
        if not self.direct:
            return
        self._xp_dims = (H + 2 * self.ph, W + 2 * self.pw)
        # the top diff channels last: padded by kernel - 1 - pad only for a direct dx, which reads it so
        # (conv_backward_chunks pads it then alone)
        qh, qw = (self.kh - 1 - self.ph, self.kw - 1 - self.pw) if self.direct_dx else (0, 0)
        self._dyp_dims = (OH + 2 * qh, OW + 2 * qw)
        per_image = 4 * C * self._xp_dims[0] * self._xp_dims[1] + 4 * Opad * self._dyp_dims[0] * self._dyp_dims[1]
        self.direct_step = max(1, min(N, DIRECT_CHUNK_BYTES // per_image))
        # 64-byte aligned: the kernels' vector loads then never straddle two cache lines
        self._w_direct = aligned_zeros(Opad * self.kh * self.kw * C).reshape(-1, self.kh, self.kw * C, OBLOCK)
        if self.direct_bwd:
            B, _, R = wgrad_blocks(Opad, self.kw * C)
            self._wT_direct = (aligned_zeros(self.kh * self.kw * Opad * C).reshape(C // OBLOCK, self.kh, self.kw * Opad,
                                                                                    OBLOCK) if self.direct_dx else None)
            self._dw_direct = aligned_zeros(2 * Opad * self.kh * R).reshape(2, Opad // B, self.kh, R, B)
        self._no_mask = np.empty((0, 0), np.bool_)
        self._zeros = np.zeros(max(O, C), np.float32)  # the bias of a layer without one, and of dx
        self._chunk_counter = np.zeros(1, np.int64)  # the next chunk of a forward pass (conv_forward_chunks)
        self._lanes = aligned_zeros(2 * 16 * O).reshape(2, 16 * O)  # per-lane bias-gradient sums, per half

    def _use_direct(self, cut: int, backward: bool = False) -> bool:
        """The direct kernels are serial: on two threads they run only as the halves of a split."""
        return (self.direct_bwd if backward else self.direct) and (cut > 0 or numba.get_num_threads() == 1)

    def _direct_scratch(self, step: int, parts: int, dy: bool) -> list[tuple]:
        """Per part, the padded channels-last input (slot 4) and top diff (slot 5, when ``dy``)
        for ``step`` images, plus the slack the weight gradient's tiles may read past the end."""
        _, C, _, _ = self._key
        sizes = (step * C * self._xp_dims[0] * self._xp_dims[1],
                 step * self._w_direct.shape[0] * OBLOCK * self._dyp_dims[0] * self._dyp_dims[1] if dy else 0)
        out = [[] for _ in range(parts)]
        for slot, m in zip((4, 5), sizes):
            cap = -(-(m + SLACK) // 16) * 16
            buf = workspace(slot, parts * cap) if m else None
            for k in range(parts):
                out[k].append(buf[k * cap:(k + 1) * cap] if m else None)
        return [tuple(o) for o in out]

    def _pack_direct(self, W2: np.ndarray, rotated: bool) -> None:
        """W2 (Cout, C*kh*kw) into the direct kernels' layouts: (Cout/32, kh, kw*C, 32) for the
        forward and, when ``rotated`` (dx is wanted) and dx is direct, the filters turned by 180
        degrees with input and output channels swapped."""
        pack_filters(W2, self.kh, self.kw, self._w_direct.reshape(-1))
        if rotated and self.direct_bwd and self.direct_dx:
            pack_rotated_filters(self._w_direct.reshape(-1), self._w_direct.shape[0] * OBLOCK, self.channels, self.kh, self.kw,
                                 self._wT_direct.reshape(-1))

    def _forward_direct(self, x: np.ndarray, y: np.ndarray, scratch: tuple, step: int) -> None:
        """This thread's share of the chunks of ``step`` images (see ``conv_forward_chunks``: the
        chunks are taken from ``self._chunk_counter``)."""
        bias = self.blobs[1].data if self.bias_term else self._zeros
        conv_forward_chunks(x, self.ph, self.pw, self._w_direct.reshape(-1), self.kh, self.kw, bias, y,
                            scratch[0], step, self._chunk_counter)

    def _backward_direct(self, x, dy, dx, flags: tuple, part: tuple) -> None:
        """Images ``lo:hi`` of ``part = (k, lo, hi, step, (xp, dyp))`` on the direct path: dW into
        ``_dw_direct[k]``, db into ``_db_acc[k]``, dx by the direct kernel when ``direct_dx``
        (otherwise the caller computes it through columns)."""
        need_x, need_w, need_b = flags
        k, lo, hi, step, (xp, dyp) = part
        wT = self._wT_direct.reshape(-1) if self.direct_dx else self._zeros
        conv_backward_chunks(x[lo:hi], dy[lo:hi], self.ph, self.pw, self.kh, self.kw, wT, dx[lo:hi],
                             self._dw_direct[k].reshape(-1), self._db_acc[k], xp, dyp, self._zeros, self._lanes[k], step,
                             need_x and self.direct_dx, need_w, need_b)

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
        cut = _split_at(N)
        if self._use_direct(cut):
            self._pack_direct(W2, False)
            # small chunks (1/32 of the batch): the faster thread takes the last ones, and the two
            # end within a chunk of each other
            step = max(1, min(self.direct_step, N // 32)) if cut else self.direct_step
            scratch = self._direct_scratch(step, 2 if cut else 1, False)
            for b, t in zip(bottom, top):
                self._chunk_counter[0] = 0
                if not cut:
                    self._forward_direct(b.data, t.data, scratch[0], step)
                    continue
                run_halves(lambda s, x=b.data, y=t.data: self._forward_direct(x, y, s, step), scratch[0], scratch[1])
            return
        if self.nhwc:
            W2 = self._channels_last(W2)
        step = self._half_step(cut) if cut else self.step
        scratch = self._scratch(step, 2 if cut else 1, (self.nhwc or self.group > 1, True, self.nhwc, False))
        for b, t in zip(bottom, top):
            y = t.data.reshape(N, self.num_output, self.P)
            if not cut:
                self._forward_range(W2, b.data, y, (0, N, step, _PARALLEL, scratch[0]))
                continue

            def half(part, x=b.data, y=y):
                self._forward_range(W2, x, y, part)

            with SerialBlas():
                run_halves(half, (0, cut, step, _SERIAL, scratch[0]), (cut, N, step, _SERIAL, scratch[1]))

    def _half_step(self, cut: int) -> int:
        """Images per chunk on each thread of a batch split at ``cut``."""
        return max(1, min(cut, (SPLIT_CHUNK_BYTES or CHUNK_BYTES // 2) // (4 * self.K * self.P)))

    def _scratch(self, step: int, parts: int, used: tuple) -> list[tuple]:
        """Per part, the flat scratch vectors of slots 0-3 (``used``: which slots the pass needs),
        each large enough for ``step`` images: slot 0 the output or top diff (P x Cout per image),
        1 the columns or rows (K x P), 2 and 3 the image and its diff channels-last (C x H x W).
        All are cut from this thread's workspace, so the worker's half uses the caller's buffers
        and a split batch holds no more scratch than one thread's chunk of twice the size (more
        only when one image's columns outgrow a chunk: CaffeNet's conv1, two images in flight)."""
        _, C, H, W = self._key
        per_image = (self.num_output * self.P, self.K * self.P, C * H * W, C * H * W)
        cut = [[] for _ in range(parts)]
        for slot, (m, use) in enumerate(zip(per_image, used)):
            cap = -(-step * m // 16) * 16 if use else 0  # the second part on a 64-byte boundary
            buf = workspace(slot, parts * cap) if use else None
            for k in range(parts):
                cut[k].append(buf[k * cap:(k + 1) * cap] if use else None)
        return [tuple(c) for c in cut]

    def _forward_range(self, W2: np.ndarray, x: np.ndarray, y: np.ndarray, part: tuple) -> None:
        """Images ``lo:hi`` of ``part = (lo, hi, step, kernels, scratch)``, ``step`` at a time."""
        lo, hi, step, kernels, scratch = part
        for n0 in range(lo, hi, step):
            n1 = min(hi, n0 + step)
            if self.nhwc:
                self._forward_rows(W2, x[n0:n1], y[n0:n1], kernels, scratch)
            else:
                self._forward_columns(W2, x[n0:n1], y[n0:n1], kernels, scratch)
            if self.bias_term:
                y[n0:n1] += self.blobs[1].data[None, :, None]  # while the chunk is in cache

    def _forward_rows(self, Wh: np.ndarray, x: np.ndarray, y: np.ndarray, kernels: tuple, scratch: tuple) -> None:
        """y (n, Cout, P) = conv(x (n, C, H, W)) through channels-last rows: one GEMM (n*P, K) x (K, Cout)."""
        n, C, H, W = x.shape
        P, K, O = self.P, self.K, self.num_output
        xh = scratch[2][:x.size].reshape(n, H, W, C)
        np.copyto(xh, x.transpose(0, 2, 3, 1))
        rows = scratch[1][:n * P * K].reshape(n * P, K)
        out = scratch[0][:n * P * O].reshape(n * P, O)
        kernels[2](xh, self.geom, rows)
        np.matmul(rows, Wh.T, out=out)
        np.copyto(y, out.reshape(n, P, O).transpose(0, 2, 1))

    def _forward_columns(self, W2: np.ndarray, x: np.ndarray, y: np.ndarray, kernels: tuple, scratch: tuple) -> None:
        """y (n, Cout, P) = conv(x (n, C, H, W)), through columns and one GEMM per group."""
        n = x.shape[0]
        G, P = self.group, self.P
        Kg, Og = self.K // G, self.num_output // G
        col = scratch[1][:self.K * n * P].reshape(self.K, n * P)
        kernels[0](x, self.geom, col)
        if G == 1:
            # straight into y, image by image (one stacked matmul over column blocks): faster
            # than one GEMM into scratch plus a transposing copy (0.25 vs 0.29 ms, LeNet conv1)
            np.matmul(W2, col.reshape(self.K, n, P).transpose(1, 0, 2), out=y)
            return
        out = scratch[0][:self.num_output * n * P].reshape(self.num_output, n * P)
        for g in range(G):
            np.matmul(W2[g * Og:(g + 1) * Og], col[g * Kg:(g + 1) * Kg], out=out[g * Og:(g + 1) * Og])
        np.copyto(y, out.reshape(self.num_output, n, P).transpose(1, 0, 2))

    def backward(self, top, propagate_down, bottom) -> None:
        N = bottom[0].shape[0]
        O = self.num_output
        W2 = self._masked_weights()
        cut = _split_at(N)
        direct = self._use_direct(cut, backward=True)
        need_w = bool(self.param_propagate_down[0])
        need_b = self.bias_term and bool(self.param_propagate_down[1])
        columns_x = any(propagate_down) and not (direct and self.direct_dx)  # dx through columns or rows
        if direct:
            self._pack_direct(W2, any(propagate_down))
        if self.nhwc and (columns_x or not direct):
            W2 = self._channels_last(W2)
        step = self._half_step(cut) if cut else self.step
        parts = 2 if cut else 1
        scratch = self._scratch(step, parts, (not direct or columns_x, not direct or columns_x,
                                              self.nhwc and need_w and not direct, self.nhwc and columns_x))
        if direct:
            dstep = min(self.direct_step, cut) if cut else self.direct_step
            dscratch = self._direct_scratch(dstep, parts, True)
            self._dw_direct[:parts] = 0
        else:
            self._dw_acc[...] = 0
        self._db_acc[...] = 0
        for i, (t, b) in enumerate(zip(top, bottom)):
            dy = t.diff.reshape(N, O, self.P)
            flags = (bool(propagate_down[i]), need_w, need_b)

            def half(part, x=b.data, dy=dy, dx=b.diff, flags=flags, dy4=t.diff):
                if not direct:
                    self._backward_range(W2, x, dy, dx, flags, part)
                    return
                self._backward_direct(x, dy4, dx, flags, part[1])
                if flags[0] and not self.direct_dx:
                    self._backward_range(W2, x, dy, dx, (True, False, False), part[0])

            halves = [(0, 0, cut or N, step, _SERIAL if cut else _PARALLEL, scratch[0])]
            if cut:
                halves.append((1, cut, N, step, _SERIAL, scratch[1]))
            if direct:
                halves = [(h, (h[0], h[1], h[2], dstep, dscratch[h[0]])) for h in halves]
            if not cut:
                half(halves[0])
                continue
            with SerialBlas():
                run_halves(half, *halves)
        dw_acc, db_acc = self._dw_acc[0], self._db_acc[0]
        if cut:  # the second half's sums (the same order whichever thread ran it)
            if not direct:
                dw_acc += self._dw_acc[1]
            db_acc += self._db_acc[1]
        if need_w and direct:  # both halves' packed sums, straight into the diff
            mask = self.connection_mask if self.connection_mask is not None else self._no_mask
            add_packed_gradient(self._dw_direct, parts, self.kh, self.kw, mask, self.blobs[0].diff.reshape(O, -1))
        elif need_w:
            khkw = self.kh * self.kw
            Cg = self.channels // self.group
            acc = dw_acc.reshape(O, khkw, Cg).transpose(0, 2, 1) if self.nhwc else dw_acc.reshape(O, Cg, khkw)
            if self.connection_mask is not None:  # the unlisted filters never move
                acc = acc * self._mask2d.reshape(O, Cg, khkw)
            self.blobs[0].diff.reshape(O, Cg, khkw)[...] += acc
        if need_b:
            self.blobs[1].diff += db_acc

    def _backward_range(self, W2, x, dy, dx, flags: tuple, part: tuple) -> None:
        """Images ``lo:hi`` of ``part = (k, lo, hi, step, kernels, scratch)``, ``step`` at a time,
        their parameter gradients summed into accumulator ``k``."""
        k, lo, hi, step, kernels, scratch = part
        for n0 in range(lo, hi, step):
            n1 = min(hi, n0 + step)
            args = (W2, x[n0:n1], dy[n0:n1], dx[n0:n1], *flags, k, kernels, scratch)
            if self.nhwc:
                self._backward_rows(*args)
            else:
                self._backward_columns(*args)

    def _backward_rows(self, Wh, x, dy, dx, need_x: bool, need_w: bool, need_b: bool, k: int, kernels: tuple,
                       scratch: tuple) -> None:
        """One chunk of images through channels-last rows: dW += dy^T rows, dx = row2im(dy Wh)
        (parameter gradients into accumulator ``k``)."""
        n, C, H, W = x.shape
        P, K, O = self.P, self.K, self.num_output
        d = scratch[0][:n * P * O].reshape(n * P, O)
        np.copyto(d.reshape(n, P, O), dy.transpose(0, 2, 1))
        if need_b:
            self._db_acc[k] += dy.sum(axis=(0, 2))  # ~3x faster than the column sums of d
        rows = scratch[1][:n * P * K].reshape(n * P, K)
        if need_w:
            xh = scratch[2][:x.size].reshape(n, H, W, C)
            np.copyto(xh, x.transpose(0, 2, 3, 1))
            kernels[2](xh, self.geom, rows)
            np.matmul(d.T, rows, out=self._dw_tmp[k])
            self._dw_acc[k] += self._dw_tmp[k]
        if need_x:
            np.matmul(d, Wh, out=rows)
            dxh = scratch[3][:x.size].reshape(n, H, W, C)
            kernels[3](rows, self.geom, dxh)
            np.copyto(dx, dxh.transpose(0, 3, 1, 2))

    def _backward_columns(self, W2, x, dy, dx, need_x: bool, need_w: bool, need_b: bool, k: int,
                          kernels: tuple, scratch: tuple) -> None:
        """One chunk of images through columns: dW_g^T += col_g dy_g^T, dx = col2im(W_g^T dy_g)
        (parameter gradients into accumulator ``k``).

        dW^T = col (K, n*P) x dy^T ran ~1.5x faster than dW = dy (Cout, n*P) x col^T at conv1's
        shapes (K = 25 or 75); dy itself stays (Cout, n*P), whose copy from (n, Cout, P) is cheap.
        """
        n = x.shape[0]
        G, P, O = self.group, self.P, self.num_output
        if need_w and self.shifted and not self.nhwc:  # straight from the image, no columns
            OH = self._wide.shape[2] // x.shape[3]
            wgrad_shifted_accumulate(dy.reshape(n, O, OH, P // OH), x.reshape(n, -1), self._offsets, self._wide[k],
                                     self._dw_acc[k])
            need_w = False
            if not need_x:
                if need_b:
                    self._db_acc[k] += dy.sum(axis=(0, 2))
                return
        Kg, Og = self.K // G, O // G
        d = scratch[0][:O * n * P].reshape(O, n * P)
        np.copyto(d.reshape(O, n, P), dy.transpose(1, 0, 2))
        if need_b:
            self._db_acc[k] += d.sum(axis=1)
        col = scratch[1][:self.K * n * P].reshape(self.K, n * P)
        if need_w:
            kernels[0](x, self.geom, col)
            dw_acc, dwT_tmp = self._dw_acc[k], self._dwT_tmp[k]
            if Og * Kg <= WGRAD_KERNEL_MAX:  # small outputs: blocked dot products, into dw_acc
                for g in range(G):
                    gO = slice(g * Og, (g + 1) * Og)
                    wgrad_accumulate(d[gO], col[g * Kg:(g + 1) * Kg], dw_acc[gO])
            elif G == 1:
                np.matmul(col, d.T, out=dwT_tmp)
                dw_acc += dwT_tmp.T
            else:
                for g in range(G):
                    gO = slice(g * Og, (g + 1) * Og)
                    np.matmul(col[g * Kg:(g + 1) * Kg], d[gO].T, out=dwT_tmp[:Kg, gO])
                    dw_acc[gO] += dwT_tmp[:Kg, gO].T
        if need_x:
            for g in range(G):
                gO = slice(g * Og, (g + 1) * Og)
                np.matmul(W2[gO].T, d[gO], out=col[g * Kg:(g + 1) * Kg])
            kernels[1](col, self.geom, dx)

"""Recurrent layers: RNN and LSTM as Caffe has them (blob layout and numbers), GRU, LSTMUnit, and
SequenceIndicator (the continuation indicators of fixed-length sequences).

Caffe's sequence convention: bottom x (T, N, ...) holds T time steps of N independent streams,
flattened from axis 2 to (T, N, I); bottom cont (T, N) is 0 where a sequence starts (the
previous state is multiplied by cont_t, so 0 resets it) and 1 where it continues; an optional
static input x_static (N, ...) adds W_static x_static to every step's input transform.  With
``recurrent_param { expose_hidden: true }`` the initial states are bottoms after those (RNN: h_0;
LSTM: h_0, c_0, each (1, N, H)) and the final states are tops after the output (RNN: h_T;
LSTM: h_T, c_T), so a long sequence can be cut into chunks that pass the state along.
Without it the layer carries its own state: each forward starts from the previous forward's
final state (zeros at first), as Caffe does, so a batch whose cont is 1 at t = 0 continues the
previous batch's sequences (the solverstate keeps that state).

Differences from Caffe, all extensions: T may change between forwards (Caffe fixes it at
set-up); with ``expose_hidden`` the gradient reaches the initial-state bottoms and the diffs of
the final-state tops flow back (Caffe shares only their data, so it ignores both); ``peephole``
(LSTM) and ``nonlinearity`` (RNN) fields; the GRU.  The bottom cont never receives a gradient
(its diff is set to 0; Caffe refuses to propagate to it).  ``debug_info`` is accepted and has no
effect (Caffe logs its unrolled net's blobs; there is no unrolled net here).

The input transform of all T steps is one GEMM before the time loop, and the weight gradients and
dx one GEMM each after it; per step, the recurrent product is one ``np.matmul`` and the gate
arithmetic one Numba kernel (pycaffe_lite/kernels/recurrent.py says why, with the measurements).
The N streams are independent, so with two or more CPUs and N >= ``SPLIT_MIN_N`` the time loops
(forward and backward) run on two threads, each over half of the streams with one-thread BLAS
and the Numba kernels, which release the GIL, and the products before and after the loops are
split in two likewise (see :func:`_row_parts`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._threads import SerialBlas, available_cpus, blas_libs
from ..kernels import recurrent as K
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer

SIGMOID = caffe_pb2.RecurrentParameter.SIGMOID

def _serial_blas():
    """BLAS on one thread (:class:`pycaffe_lite._threads.SerialBlas`).  A recurrent layer makes many
    small products (two per time step).  Measured at T = 28, N = 64, H = 128
    (``benchmarks/recurrent.py --blas``, forward + backward): on an idle 2-core machine BLAS's
    second thread saves 8-26% (LSTM 6.7 vs 9.0 ms, GRU 6.2 vs 6.7, RNN 3.1 vs 4.0), but while
    another process holds a core, threads waiting for each other made the layers 5-130x slower
    (LSTM 24-310 vs 10 ms, GRU 930 vs 7, RNN 540 vs 4)."""
    return SerialBlas()


#: the smallest batch whose time loops are split over two threads: below it each half's per-step
#: products are too small for a second thread to pay for the hand-over (a module attribute, so
#: tests can lower it and benchmarks can raise it).
SPLIT_MIN_N = 16
#: usable CPUs (None: looked up on first use); tests may set it
_CPUS: int | None = None
#: the worker thread that runs the second half of the streams, and the process that made it (a
#: forked child has the executor object but not its thread, so it makes its own)
_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_POOL_LOCK = threading.Lock()


def _row_parts(N: int) -> tuple[tuple[int, int], ...]:
    """The row (stream) ranges the time loops run over, each on its own thread: two halves when
    N >= SPLIT_MIN_N, two or more CPUs are usable and BLAS can be held to one thread
    (threadpoolctl), else all N rows on the calling thread.  Two threads each with one-thread BLAS
    beat one loop with two-thread BLAS because the halves meet only at the end of the loop, while
    BLAS's threads meet (and spin, under load) in every small per-step product.

    Measured at T = 28, N = 64, H = 128, forward + backward (``benchmarks/recurrent.py --split``,
    2-core machine): with the second core free, two threads took LSTM 4.2 vs 6.4 ms, GRU 3.6 vs
    4.7, RNN 2.3 vs 2.6 (one seq_mnist LSTM training iteration 4.4-4.7 vs 6.4-6.9 ms); they cost
    15-25% more CPU time (a 32-row per-step product runs at ~70 GFLOP/s against ~130 for 64 rows,
    and each half makes its own calls), so while other processes keep both cores busy they were
    that much slower (1.17-1.22x), never more: the threads block, they do not spin."""
    global _CPUS
    if _CPUS is None:
        _CPUS = available_cpus()
    if N < max(SPLIT_MIN_N, 2) or _CPUS < 2 or not _blas_can_be_serial():
        return ((0, N),)
    return ((0, N // 2), (N // 2, N))


def _blas_can_be_serial() -> bool:
    """Whether :func:`_serial_blas` holds BLAS to one thread (threadpoolctl is installed); without
    it, two loops each calling a multi-threaded BLAS would oversubscribe the cores."""
    return bool(blas_libs())


def _pool() -> ThreadPoolExecutor:
    """One worker thread for the whole process, made on first use.  Idle, it does not keep the
    process alive: concurrent.futures joins its (idle) workers at interpreter exit."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plite-recurrent")
            _POOL_PID = os.getpid()
        return _POOL


def _run_parts(rows, N: int) -> int:
    """Call ``rows(k, lo, hi)`` for each part k of :func:`_row_parts` (N), the last parts on the
    worker thread and part 0 on this one; return the number of parts.  Each part writes only its
    own rows and its own scratch buffers (named with k), so the result does not depend on which
    thread ran first."""
    parts = _row_parts(N)
    if len(parts) == 1:
        rows(0, 0, N)
        return 1
    futures = [_pool().submit(rows, k, lo, hi) for k, (lo, hi) in enumerate(parts[1:], 1)]
    try:
        rows(0, *parts[0])
    finally:
        for f in futures:  # wait even when part 0 failed: the others still write the buffers
            f.result()
    return len(parts)


def _run_tasks(*tasks) -> None:
    """Call each task, the first on this thread and the others on the worker thread; wait for
    all (an error in any reaches the caller)."""
    futures = [_pool().submit(task) for task in tasks[1:]]
    try:
        tasks[0]()
    finally:
        for f in futures:
            f.result()


def _gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, split: bool, add: np.ndarray | None = None) -> None:
    """out = a b (+ add, broadcast over the rows); with ``split`` the rows in two halves on the two
    threads, as the time loops are.  The products before and after the loops (the input
    transform, the weight gradients, dx) are as large as all the per-step products together
    (LSTM at T = 28, N = 64, H = 128: ~3 ms of ~6 ms with one BLAS thread)."""
    def rows(lo, hi):
        np.matmul(a[lo:hi], b, out=out[lo:hi])
        if add is not None:
            out[lo:hi] += add

    M = a.shape[0]
    if split and M >= 2:
        _run_tasks(lambda: rows(0, M // 2), lambda: rows(M // 2, M))
    else:
        rows(0, M)


def _transposed(cache: dict, name: str, w: np.ndarray) -> np.ndarray:
    """w^T as a C-contiguous scratch copy.  The per-step products h W^T run faster on it than on
    the transposed view (measured with one BLAS thread, (32, 128) x (128, 512): ~35-41 us vs
    ~61 us; (64, 128) x (128, 512): ~61 vs 62-84 us); the copy costs one pass over W per forward."""
    buf = _buffer(cache, name, w.shape[::-1])
    np.copyto(buf, w.T)
    return buf


def _buffer(cache: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 scratch array kept across calls (reallocated only when its shape changes)."""
    buf = cache.get(name)
    if buf is None or buf.shape != shape:
        buf = cache[name] = np.empty(shape, np.float32)
    return buf


class RecurrentLayer(Layer):
    """What RNN, LSTM and GRU share (Caffe's RecurrentLayer): bottoms, tops, the input
    transform, the carried or exposed state, and the parameter gradients of the products.

    Subclasses set ``num_gates`` (the input transform has ``num_gates * num_output`` rows),
    ``state_names`` (the recurrent states, in the order Caffe exposes them) and implement
    ``param_shapes``, ``run_forward_loop`` and ``run_backward_loop``.
    """

    min_num_bottom = 2
    min_num_top = 1
    num_gates = 1
    state_names: tuple[str, ...] = ("h",)

    # ---- set-up -------------------------------------------------------------------
    def setup(self, bottom, top) -> None:
        param = self.layer_param.recurrent_param
        self.H = int(param.num_output)
        if self.H <= 0:
            raise self.config_error("recurrent_param.num_output must be set to a positive number (the hidden size)")
        self.check_extension_fields(param)
        self.expose_hidden = bool(param.expose_hidden)
        num_states = len(self.state_names)
        num_exposed = num_states if self.expose_hidden else 0
        states = ", ".join(f"{s}_0" for s in self.state_names)
        if not 2 + num_exposed <= len(bottom) <= 3 + num_exposed:
            extra = f", then the initial states {states} (expose_hidden)" if self.expose_hidden else ""
            raise self.config_error(
                f"takes bottoms x, cont, an optional x_static{extra}: {2 + num_exposed} or {3 + num_exposed} "
                f"bottoms, got {len(bottom)}"
            )
        if len(top) != 1 + num_exposed:
            finals = ", ".join(f"{s}_T" for s in self.state_names)
            expected = f"the output and the final states {finals}" if self.expose_hidden else "one (the output)"
            hint = "" if self.expose_hidden else "; set recurrent_param { expose_hidden: true } for the final states"
            raise self.config_error(f"takes {1 + num_exposed} tops ({expected}), got {len(top)}{hint}")
        self.static_input = len(bottom) == 3 + num_exposed
        self.state_bottom0 = 3 if self.static_input else 2
        x = bottom[0]
        if x.num_axes < 3:
            raise self.shape_error(
                f"x (bottom[0]) must be (T, N, ...) with at least 3 axes (time, stream, features), got {x.shape}"
            )
        self.I = x.count(2)
        if self.static_input and bottom[2].num_axes < 1:
            raise self.shape_error("x_static (bottom[2]) must be (N, ...)")
        self.S = bottom[2].count(1) if self.static_input else 0
        shapes, fillers = self.param_shapes(param)
        self.init_param_blobs(shapes, fillers)
        self._state = None  # the carried state (num_states, N, H) when not exposed
        self._bufs: dict[str, np.ndarray] = {}
        self._split = False  # whether this pass runs on two threads (set per forward and backward)
        #: when set to a (T, N, H) float32 array, the backward writes dL/dh_t (the hidden state's
        #: whole gradient: from the top and through the recurrence) into it, step by step
        #: (pycaffe_lite/gradnorm.py); None on the normal path, which it does not slow.
        self.record_hidden_diff: np.ndarray | None = None

    def check_extension_fields(self, param) -> None:
        """Refuse extension fields the cell type has no use for."""
        if param.peephole:
            raise self.config_error(
                f"recurrent_param.peephole applies to LSTM layers only; a {self.type} has no cell state to peep at"
            )
        if param.HasField("nonlinearity") and param.nonlinearity != caffe_pb2.RecurrentParameter.TANH:
            raise self.config_error(
                f"recurrent_param.nonlinearity applies to RNN layers only; a {self.type} fixes its gate functions"
            )

    def input_param_shapes(self, param):
        """Caffe's first blobs: W_x (G, I), b (G,), then W_x_static (G, S) with a static input."""
        G = self.num_gates * self.H
        shapes = [(G, self.I), (G,)]
        fillers = [param.weight_filler, param.bias_filler]
        if self.static_input:
            shapes.append((G, self.S))
            fillers.append(param.weight_filler)
        return shapes, fillers

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1  # the continuation indicators

    # ---- reshape --------------------------------------------------------------------
    def reshape(self, bottom, top) -> None:
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 3:
            raise self.shape_error(
                f"x (bottom[0]) must be (T, N, ...) with at least 3 axes (time, stream, features), got {x.shape}"
            )
        T, N = x.shape[0], x.shape[1]
        if T == 0 or N == 0:
            raise self.shape_error(
                f"x (bottom[0]) has shape {x.shape}: T = {T} time steps and N = {N} streams; both must be at least 1"
            )
        if x.count(2) != self.I:
            raise self.shape_error(
                f"x (bottom[0]) has shape {x.shape}, {x.count(2)} inputs per step, but the weights expect "
                f"{self.I}; the input size cannot change after set-up"
            )
        if cont.shape != (T, N):
            raise self.shape_error(
                f"cont (bottom[1]) has shape {cont.shape} but must be (T, N) = {(T, N)} to match x (bottom[0]) "
                f"of shape {x.shape}"
            )
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != N or xs.count(1) != self.S:
                raise self.shape_error(
                    f"x_static (bottom[2]) has shape {xs.shape} but must be (N, ...) with N = {N} and "
                    f"{self.S} values per stream"
                )
        H = self.H
        if self.expose_hidden:
            for j, name in enumerate(self.state_names):
                b = bottom[self.state_bottom0 + j]
                if b.shape != (1, N, H):
                    raise self.shape_error(
                        f"initial state {name}_0 (bottom[{self.state_bottom0 + j}]) has shape {b.shape} but must "
                        f"be (1, N, num_output) = {(1, N, H)}"
                    )
            for j in range(len(self.state_names)):
                top[1 + j].reshape((1, N, H))
        elif self._state is None or self._state.shape[1] != N:
            # Caffe carries the state between batches of the same size; a new batch size
            # starts from zeros.
            self._state = np.zeros((len(self.state_names), N, H), np.float32)
        top[0].reshape((T, N, H))
        self.T, self.N = T, N

    # ---- forward ----------------------------------------------------------------------
    def initial_state(self, bottom) -> np.ndarray:
        """(num_states, N, H): the exposed bottoms, or the state carried from the last forward."""
        if not self.expose_hidden:
            return self._state
        state0 = _buffer(self._bufs, "state0", (len(self.state_names), self.N, self.H))
        for j in range(len(self.state_names)):
            state0[j] = bottom[self.state_bottom0 + j].data[0]
        return state0

    def input_transform(self, bottom) -> np.ndarray:
        """(T, N, G): W_x x_t + b (+ W_static x_static) for every step, by one GEMM."""
        T, N, G = self.T, self.N, self.num_gates * self.H
        pre = _buffer(self._bufs, "gates", (T, N, G))
        _gemm(bottom[0].data.reshape(T * N, self.I), self.blobs[0].data.T, pre.reshape(T * N, G), self._split,
              add=self.blobs[1].data)
        if self.static_input:
            static = _buffer(self._bufs, "static", (N, G))
            np.matmul(bottom[2].data.reshape(N, self.S), self.blobs[2].data.T, out=static)
            pre += static
        return pre

    def forward(self, bottom, top) -> None:
        with _serial_blas():
            self._forward(bottom, top)

    def _forward(self, bottom, top) -> None:
        self._split = len(_row_parts(self.N)) > 1
        state0 = self.initial_state(bottom)
        final = self.run_forward_loop(bottom, top, self.input_transform(bottom), state0)
        if self.expose_hidden:
            for j in range(len(self.state_names)):
                top[1 + j].data[0] = final[j]
        else:
            for j in range(len(self.state_names)):
                self._state[j] = final[j]

    # ---- backward ---------------------------------------------------------------------
    def final_state_diff(self, top) -> np.ndarray:
        """(num_states, N, H): the diffs of the exposed final-state tops (else zeros)."""
        d = _buffer(self._bufs, "dstate", (len(self.state_names), self.N, self.H))
        if self.expose_hidden:
            for j in range(len(self.state_names)):
                d[j] = top[1 + j].diff[0]
        else:
            d[...] = 0
        return d

    def accumulate(self, index: int, a: np.ndarray, b: np.ndarray) -> None:
        """blobs[index].diff += a^T b (via a scratch buffer: parameter diffs accumulate)."""
        blob = self.blobs[index]
        if self.param_propagate_down[index]:
            tmp = _buffer(self._bufs, f"grad{index}", blob.shape)
            _gemm(a.T, b, tmp, self._split)
            blob.diff += tmp

    def input_backward(self, propagate_down, bottom, dgates: np.ndarray) -> None:
        """Gradients of the input transform from dL/d(pre-activations) (T, N, G)."""
        T, N, G = self.T, self.N, self.num_gates * self.H
        d2 = dgates.reshape(T * N, G)
        x2 = bottom[0].data.reshape(T * N, self.I)
        self.accumulate(0, d2, x2)
        if self.param_propagate_down[1]:
            self.blobs[1].diff += d2.sum(axis=0)
        if propagate_down[0]:
            _gemm(d2, self.blobs[0].data, bottom[0].diff.reshape(T * N, self.I), self._split)
        if self.static_input and (self.param_propagate_down[2] or propagate_down[2]):
            dsum = _buffer(self._bufs, "dstatic", (N, G))
            np.sum(dgates, axis=0, out=dsum)
            self.accumulate(2, dsum, bottom[2].data.reshape(N, self.S))
            if propagate_down[2]:
                np.matmul(dsum, self.blobs[2].data, out=bottom[2].diff.reshape(N, self.S))
        if propagate_down[1]:
            bottom[1].diff[...] = 0

    def backward(self, top, propagate_down, bottom) -> None:
        with _serial_blas():
            self._backward(top, propagate_down, bottom)

    def _backward(self, top, propagate_down, bottom) -> None:
        self._split = len(_row_parts(self.N)) > 1
        dstate = self.final_state_diff(top)
        dgates = self.run_backward_loop(top, bottom, dstate)
        self.input_backward(propagate_down, bottom, dgates)
        if self.expose_hidden:
            for j in range(len(self.state_names)):
                if propagate_down[self.state_bottom0 + j]:
                    bottom[self.state_bottom0 + j].diff[0] = dstate[j]

    # ---- carried state ----------------------------------------------------------------
    def get_state(self) -> list[np.ndarray]:
        """The state carried to the next forward (none with expose_hidden)."""
        return [] if self.expose_hidden or self._state is None else [self._state.copy()]

    def set_state(self, arrays) -> None:
        if self.expose_hidden or len(arrays) != 1:
            super().set_state(arrays)
            return
        self._state = np.array(arrays[0], dtype=np.float32).reshape(len(self.state_names), -1, self.H)

    # ---- per cell type ----------------------------------------------------------------
    def param_shapes(self, param):
        raise NotImplementedError

    def run_forward_loop(self, bottom, top, pre: np.ndarray, state0: np.ndarray) -> np.ndarray:
        """Run the time loop from the input transform ``pre``; write top[0]; return the final
        states (num_states, N, H)."""
        raise NotImplementedError

    def run_backward_loop(self, top, bottom, dstate: np.ndarray) -> np.ndarray:
        """Backward through time; add the recurrent weights' diffs; turn ``dstate`` (diffs of
        the final states) into the diffs of the initial states; return dL/d(pre) (T, N, G)."""
        raise NotImplementedError


@register_layer("RNN")
class RNNLayer(RecurrentLayer):
    """Caffe's simple recurrent net (Elman 1990) with a tanh output layer.

    Bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H) if expose_hidden].
    Tops: o (T, N, H), [h_T (1, N, H) if expose_hidden]; H = ``num_output``.
    Blobs (Caffe's order): W_xh (H, I), b_h (H,), [W_xh_static (H, S)], W_hh (H, H), W_ho (H, H),
    b_o (H,).
    Forward: h_t = f(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]), f = tanh
    (``nonlinearity: SIGMOID`` for the logistic function); o_t = tanh(W_ho h_t + b_o).
    Backward: da_o = do (1 - o^2); dh_t = W_ho^T da_o + cont_{t+1} W_hh^T da_{t+1};
    da_t = dh_t f'(a_t); dW_xh += sum da x^T, dW_hh += sum da (cont h_{t-1})^T, dW_ho += sum da_o h^T.
    """

    max_num_bottom = 4
    max_num_top = 2
    num_gates = 1
    state_names = ("h",)

    def check_extension_fields(self, param) -> None:
        if param.peephole:
            raise self.config_error(
                "recurrent_param.peephole applies to LSTM layers only; an RNN has no cell state to peep at"
            )
        self.sigmoid = param.nonlinearity == SIGMOID

    def param_shapes(self, param):
        shapes, fillers = self.input_param_shapes(param)
        H = self.H
        self.i_hh = len(shapes)
        shapes += [(H, H), (H, H), (H,)]
        fillers += [param.weight_filler, param.weight_filler, param.bias_filler]
        return shapes, fillers

    def run_forward_loop(self, bottom, top, pre, state0):
        T, N, H = self.T, self.N, self.H
        hc_all = _buffer(self._bufs, "hc", (T, N, H))
        cont_all = bottom[1].data[:, :, None]
        w_hh_t = _transposed(self._bufs, "w_hh_t", self.blobs[self.i_hh].data)
        sigmoid = self.sigmoid

        def rows(k, lo, hi):
            rec = _buffer(self._bufs, f"rec{k}", (hi - lo, H))
            # the kernel turns a_t into h_t in place
            h, hc, cont, h0 = pre[:, lo:hi], hc_all[:, lo:hi], cont_all[:, lo:hi], state0[0, lo:hi]
            cont_t = cont_all[:, lo:hi, 0]
            for t in range(T):
                np.matmul(h0 if t == 0 else h[t - 1], w_hh_t, out=rec)
                K.rnn_step_forward(h[t], rec, cont_t[t], sigmoid)
            # cont_t h_{t-1} for the weight gradient, in two passes rather than one per step
            np.multiply(h0, cont[0], out=hc[0])
            np.multiply(h[:-1], cont[1:], out=hc[1:])

        _run_parts(rows, N)
        o = top[0].data
        _gemm(pre.reshape(T * N, H), self.blobs[self.i_hh + 1].data.T, o.reshape(T * N, H), self._split,
              add=self.blobs[self.i_hh + 2].data)
        K.tanh_inplace(o)
        return pre[T - 1][None]

    def run_backward_loop(self, top, bottom, dstate):
        T, N, H = self.T, self.N, self.H
        h = self._bufs["gates"]
        o, do = top[0].data, top[0].diff
        da_o = _buffer(self._bufs, "da_o", (T, N, H))
        np.multiply(o, o, out=da_o)
        np.subtract(1.0, da_o, out=da_o)
        da_o *= do
        da_o2, h2 = da_o.reshape(T * N, H), h.reshape(T * N, H)
        i_ho = self.i_hh + 1
        self.accumulate(i_ho, da_o2, h2)
        if self.param_propagate_down[i_ho + 1]:
            self.blobs[i_ho + 1].diff += da_o2.sum(axis=0)
        da = _buffer(self._bufs, "da", (T, N, H))
        _gemm(da_o2, self.blobs[i_ho].data, da.reshape(T * N, H), self._split)
        cont_all = bottom[1].data[:, :, None]
        w_hh = self.blobs[self.i_hh].data
        record_all, sigmoid, h_all, da_all = self.record_hidden_diff, self.sigmoid, h, da

        def rows(k, lo, hi):
            dhc = _buffer(self._bufs, f"dhc{k}", (hi - lo, H))
            dh, h, da, cont = dstate[0, lo:hi], h_all[:, lo:hi], da_all[:, lo:hi], cont_all[:, lo:hi]
            record = None if record_all is None else record_all[:, lo:hi]
            for t in range(T - 1, -1, -1):
                if record is not None:
                    np.add(da[t], dh, out=record[t])
                K.rnn_step_backward(h[t], dh, sigmoid, da[t])
                np.matmul(da[t], w_hh, out=dhc)
                np.multiply(dhc, cont[t], out=dh)

        _run_parts(rows, N)
        self.accumulate(self.i_hh, da.reshape(T * N, H), self._bufs["hc"].reshape(T * N, H))
        return da


@register_layer("LSTM")
class LSTMLayer(RecurrentLayer):
    """Caffe's LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000),
    optionally with peephole connections (Gers & Schmidhuber 2000).

    Bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0, c_0 (1, N, H) if
    expose_hidden].  Tops: h (T, N, H), [h_T, c_T (1, N, H) if expose_hidden].
    Blobs (Caffe's order): W_xc (4H, I), b_c (4H,), [W_xc_static (4H, S)], W_hc (4H, H); with
    ``peephole``: V_i, V_f, V_o (H,) each, appended (filled with zeros).  The 4H rows are the
    gates i, f, o and the candidate g, in that order.
    Forward, with a = W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t h_{t-1}) and
    cc = cont_t c_{t-1}:  i = s(a_i + V_i cc), f = s(a_f + V_f cc), g = tanh(a_g),
    c_t = f cc + i g, o = s(a_o + V_o c_t), h_t = o tanh(c_t)   (s: logistic sigmoid; without
    peepholes exactly Caffe's LSTMUnit: c_t = cont_t f c_{t-1} + i g).
    Backward: dc_t = dc_{t+1 -> t} + dh_t o (1 - tanh^2 c_t) + V_o da_o, da_o = dh_t tanh(c_t) o(1-o),
    da_i = dc_t g i(1-i), da_f = dc_t cc f(1-f), da_g = dc_t i (1-g^2);
    dc_{t-1} = cont_t (f dc_t + V_i da_i + V_f da_f); dh_{t-1} += cont_t W_hc^T da.
    """

    max_num_bottom = 5
    max_num_top = 3
    num_gates = 4
    state_names = ("h", "c")

    def check_extension_fields(self, param) -> None:
        if param.HasField("nonlinearity") and param.nonlinearity != caffe_pb2.RecurrentParameter.TANH:
            raise self.config_error(
                "recurrent_param.nonlinearity applies to RNN layers only; an LSTM fixes its gate functions"
            )
        self.peephole = bool(param.peephole)

    def param_shapes(self, param):
        shapes, fillers = self.input_param_shapes(param)
        self.i_hc = len(shapes)
        shapes.append((4 * self.H, self.H))
        fillers.append(param.weight_filler)
        if self.peephole:
            shapes += [(self.H,)] * 3
            fillers += [None] * 3
        self._no_peep = np.zeros((3, self.H), np.float32)
        return shapes, fillers

    def peep(self) -> np.ndarray:
        if not self.peephole:
            return self._no_peep
        p = _buffer(self._bufs, "peep", (3, self.H))
        for j in range(3):
            p[j] = self.blobs[self.i_hc + 1 + j].data
        return p

    def run_forward_loop(self, bottom, top, pre, state0):
        T, N, H = self.T, self.N, self.H
        c_all = _buffer(self._bufs, "c", (T, N, H))
        hc_all = _buffer(self._bufs, "hc", (T, N, H))
        self._state0 = _buffer(self._bufs, "state0_copy", state0.shape)
        self._state0[...] = state0  # the backward needs c_{-1}; the carried state moves on
        h_all, cont2 = top[0].data, bottom[1].data
        w_hc_t = _transposed(self._bufs, "w_hc_t", self.blobs[self.i_hc].data)
        peep = self.peep()

        def rows(k, lo, hi):
            rec = _buffer(self._bufs, f"rec{k}", (hi - lo, 4 * H))
            h, c, hc, a = h_all[:, lo:hi], c_all[:, lo:hi], hc_all[:, lo:hi], pre[:, lo:hi]
            cont, cont_col = cont2[:, lo:hi], cont2[:, lo:hi, None]
            h0, c0 = state0[0, lo:hi], state0[1, lo:hi]
            for t in range(T):
                np.matmul(h0 if t == 0 else h[t - 1], w_hc_t, out=rec)
                K.lstm_step_forward(a[t], rec, c0 if t == 0 else c[t - 1], cont[t], peep, c[t], h[t])
            # cont_t h_{t-1} for the weight gradient, in two passes rather than one per step
            np.multiply(h0, cont_col[0], out=hc[0])
            np.multiply(h[:-1], cont_col[1:], out=hc[1:])

        _run_parts(rows, N)
        h, c = h_all, c_all
        final = _buffer(self._bufs, "final", (2, N, H))
        final[0] = h[T - 1]
        final[1] = c[T - 1]
        return final

    def run_backward_loop(self, top, bottom, dstate):
        T, N, H = self.T, self.N, self.H
        dgates_all = _buffer(self._bufs, "dgates", (T, N, 4 * H))
        act_all, c_all, cont2, top_diff_all = self._bufs["gates"], self._bufs["c"], bottom[1].data, top[0].diff
        w_hc, peep, c_init = self.blobs[self.i_hc].data, self.peep(), self._state0[1]
        record_all = self.record_hidden_diff

        def rows(k, lo, hi):
            n = hi - lo
            dhc = _buffer(self._bufs, f"dhc{k}", (n, H))
            # the kernel wants the (2, n, H) state diffs contiguous: a copy per call, not per step
            ds = _buffer(self._bufs, f"dstate{k}", (2, n, H))
            ds[...] = dstate[:, lo:hi]
            dpeep = _buffer(self._bufs, f"dpeep{k}", (3, H))
            dpeep[...] = 0
            act, c, dgates, top_diff = act_all[:, lo:hi], c_all[:, lo:hi], dgates_all[:, lo:hi], top_diff_all[:, lo:hi]
            cont, cont_col, c0 = cont2[:, lo:hi], cont2[:, lo:hi, None], c_init[lo:hi]
            record = None if record_all is None else record_all[:, lo:hi]
            for t in range(T - 1, -1, -1):
                c_prev = c0 if t == 0 else c[t - 1]
                K.lstm_step_backward(act[t], c[t], c_prev, cont[t], peep, top_diff[t], ds, dgates[t], dpeep)
                if record is not None:
                    record[t] = ds[0]
                np.matmul(dgates[t], w_hc, out=dhc)
                np.multiply(dhc, cont_col[t], out=ds[0])
            dstate[:, lo:hi] = ds

        num_parts = _run_parts(rows, N)
        self.accumulate(self.i_hc, dgates_all.reshape(T * N, 4 * H), self._bufs["hc"].reshape(T * N, H))
        if self.peephole:
            dpeep = self._bufs["dpeep0"]
            for k in range(1, num_parts):
                dpeep += self._bufs[f"dpeep{k}"]
            for j in range(3):
                if self.param_propagate_down[self.i_hc + 1 + j]:
                    self.blobs[self.i_hc + 1 + j].diff += dpeep[j]
        return dgates_all


@register_layer("GRU")
class GRULayer(RecurrentLayer):
    """Gated recurrent unit (Cho et al., "Learning phrase representations using RNN
    encoder-decoder for statistical machine translation", EMNLP 2014); not in Caffe.

    Bottoms: x (T, N, ...), cont (T, N), [x_static (N, ...)], [h_0 (1, N, H) if expose_hidden].
    Tops: h (T, N, H), [h_T (1, N, H) if expose_hidden].
    Blobs (this framework's layout, in the spirit of Caffe's LSTM): W_x (3H, I), b (3H,),
    [W_x_static (3H, S)], W_h (3H, H); the 3H rows are the update gate z, the reset gate r and
    the candidate, in that order (W_h's last H rows are Cho et al.'s U, applied to r * h).
    Forward, with hp = cont_t h_{t-1} and a = W_x x_t + b [+ W_x_static x_static]:
    z = s(a_z + U_z hp), r = s(a_r + U_r hp), h~ = tanh(a_c + U (r * hp)),
    h_t = z hp + (1 - z) h~   (the standard form: the reset gate acts before the product U).
    Backward: da_z = dh (hp - h~) z(1-z), da_c = dh (1-z)(1-h~^2), d(r hp) = U^T da_c,
    da_r = d(r hp) hp r(1-r), dh_{t-1} = cont_t (dh z + r d(r hp) + U_z^T da_z + U_r^T da_r).
    """

    max_num_bottom = 4
    max_num_top = 2
    num_gates = 3
    state_names = ("h",)

    def param_shapes(self, param):
        shapes, fillers = self.input_param_shapes(param)
        self.i_h = len(shapes)
        shapes.append((3 * self.H, self.H))
        fillers.append(param.weight_filler)
        return shapes, fillers

    def run_forward_loop(self, bottom, top, pre, state0):
        T, N, H = self.T, self.N, self.H
        hc_all = _buffer(self._bufs, "hc", (T, N, H))
        rh_all = _buffer(self._bufs, "rh", (T, N, H))
        W = self.blobs[self.i_h].data
        w_zr_t, w_c_t = _transposed(self._bufs, "w_zr_t", W[: 2 * H]), _transposed(self._bufs, "w_c_t", W[2 * H:])
        cont_all = bottom[1].data[:, :, None]
        h_all = top[0].data

        def rows(k, lo, hi):
            rec_zr = _buffer(self._bufs, f"rec_zr{k}", (hi - lo, 2 * H))
            rec_c = _buffer(self._bufs, f"rec_c{k}", (hi - lo, H))
            h, hc, rh, a = h_all[:, lo:hi], hc_all[:, lo:hi], rh_all[:, lo:hi], pre[:, lo:hi]
            cont, h0 = cont_all[:, lo:hi], state0[0, lo:hi]
            for t in range(T):
                np.multiply(h0 if t == 0 else h[t - 1], cont[t], out=hc[t])
                np.matmul(hc[t], w_zr_t, out=rec_zr)
                K.gru_step_gates(a[t], rec_zr, hc[t], rh[t])
                np.matmul(rh[t], w_c_t, out=rec_c)
                K.gru_step_output(a[t], rec_c, hc[t], h[t])

        _run_parts(rows, N)
        return h_all[T - 1][None]

    def run_backward_loop(self, top, bottom, dstate):
        T, N, H = self.T, self.N, self.H
        dgates_all = _buffer(self._bufs, "dgates", (T, N, 3 * H))
        W = self.blobs[self.i_h]
        act_all, hc_all, cont_all, top_diff_all = self._bufs["gates"], self._bufs["hc"], bottom[1].data, top[0].diff
        w_zr, w_c = W.data[: 2 * H], W.data[2 * H:]
        record_all = self.record_hidden_diff

        def rows(k, lo, hi):
            n = hi - lo
            dzr = _buffer(self._bufs, f"dzr{k}", (n, 2 * H))
            dac, dhp, drh, dhp_gates = (_buffer(self._bufs, f"{name}{k}", (n, H)) for name in ("dac", "dhp", "drh", "dhpg"))
            dh, act, hc, cont = dstate[0, lo:hi], act_all[:, lo:hi], hc_all[:, lo:hi], cont_all[:, lo:hi]
            top_diff, dgates = top_diff_all[:, lo:hi], dgates_all[:, lo:hi]
            record = None if record_all is None else record_all[:, lo:hi]
            for t in range(T - 1, -1, -1):
                K.gru_step_backward_output(act[t], hc[t], top_diff[t], dh, dzr, dac, dhp)
                if record is not None:
                    record[t] = dh
                np.matmul(dac, w_c, out=drh)
                K.gru_step_backward_reset(act[t], hc[t], drh, dzr, dhp)
                np.matmul(dzr, w_zr, out=dhp_gates)
                K.gru_step_backward_state(dzr, dac, dhp, dhp_gates, cont[t], dgates[t], dh)

        _run_parts(rows, N)
        dgates = dgates_all
        if self.param_propagate_down[self.i_h]:
            d2 = dgates.reshape(T * N, 3 * H)
            tmp = _buffer(self._bufs, "grad_h", (3 * H, H))
            hc2, rh2 = self._bufs["hc"].reshape(T * N, H), self._bufs["rh"].reshape(T * N, H)
            _gemm(d2[:, : 2 * H].T, hc2, tmp[: 2 * H], self._split)
            _gemm(d2[:, 2 * H:].T, rh2, tmp[2 * H:], self._split)
            W.diff += tmp
        return dgates


@register_layer("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One LSTM step, as Caffe's LSTMUnit (the cell its unrolled LSTM uses at every step).

    Bottoms: c_prev (1, N, H), x (1, N, 4H) the gate pre-activations (blocks i, f, o, g),
    cont (1, N).  Tops: c (1, N, H), h (1, N, H).  No blobs.
    Forward: i = s(x_i), f = cont s(x_f), o = s(x_o), g = tanh(x_g); c = f c_prev + i g;
    h = o tanh(c).
    Backward: dc' = dc + dh o (1 - tanh^2 c); dc_prev = dc' f; dx_i = dc' g i(1-i);
    dx_f = dc' c_prev cont s(x_f)(1 - s(x_f)); dx_o = dh tanh(c) o(1-o); dx_g = dc' i (1-g^2).
    cont gets no gradient (its diff is set to 0).
    """

    exact_num_bottom = 3
    exact_num_top = 2

    def setup(self, bottom, top) -> None:
        self._bufs: dict[str, np.ndarray] = {}

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 2

    def reshape(self, bottom, top) -> None:
        c_prev, x, cont = bottom
        if c_prev.num_axes != 3 or c_prev.shape[0] != 1:
            raise self.shape_error(f"c_prev (bottom[0]) must be (1, N, H), got {c_prev.shape}")
        _, N, H = c_prev.shape
        if x.shape != (1, N, 4 * H):
            raise self.shape_error(
                f"x (bottom[1]) has shape {x.shape} but must be (1, N, 4H) = {(1, N, 4 * H)} for c_prev of "
                f"shape {c_prev.shape}"
            )
        if cont.shape != (1, N):
            raise self.shape_error(f"cont (bottom[2]) has shape {cont.shape} but must be (1, N) = {(1, N)}")
        for t in top:
            t.reshape((1, N, H))
        self.N, self.H = N, H
        self._act = _buffer(self._bufs, "act", (N, 4 * H))

    def forward(self, bottom, top) -> None:
        K.lstm_unit_forward(bottom[0].data[0], bottom[1].data[0], bottom[2].data[0], top[0].data[0],
                            top[1].data[0], self._act)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[2]:
            bottom[2].diff[...] = 0
        if not (propagate_down[0] or propagate_down[1]):
            return
        N, H = self.N, self.H
        dc_prev = bottom[0].diff[0] if propagate_down[0] else _buffer(self._bufs, "dc_prev", (N, H))
        dx = bottom[1].diff[0] if propagate_down[1] else _buffer(self._bufs, "dx", (N, 4 * H))
        K.lstm_unit_backward(bottom[0].data[0], bottom[2].data[0], self._act, top[0].data[0], top[0].diff[0],
                             top[1].diff[0], dc_prev, dx)


@register_layer("SequenceIndicator")
class SequenceIndicatorLayer(Layer):
    """The continuation indicators of a batch of whole sequences (a pycaffe_lite extension).

    Bottom: x (T, N, ...), only its shape is read.  Top: cont (T, N), 0 at t = 0 and 1 after:
    every stream starts a new sequence at the first step, as a recurrent layer's ``cont`` bottom
    wants when each batch holds complete sequences (e.g. images read row by row).  No blobs, no
    gradient.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes < 2:
            raise self.shape_error(f"x (bottom[0]) must be (T, N, ...) with at least 2 axes, got {x.shape}")
        top[0].reshape(x.shape[:2])

    def forward(self, bottom, top) -> None:
        cont = top[0].data
        cont[...] = 1
        cont[0] = 0

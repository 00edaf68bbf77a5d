"""The Solver base class: Caffe's Solver scaffolding plus the update steps every SGD-family
solver shares (learning rate, gradient clipping, normalization, regularization).

One iteration of :meth:`Solver.step`, in Caffe's order::

    clear param diffs -> (test if due) -> iter_size x forward_backward -> smoothed loss
    -> apply_update(): rate = lr_policy(iter); clip_gradients();
                       for each param: normalize -> regularize -> compute_update_value
                       net.update()   (data -= diff)
    -> iter += 1 -> snapshot if due

A concrete solver (``sgd.py``, ``adam.py``, ...) overrides only :meth:`compute_update_value`
and, if it needs them, :attr:`num_history_sets` / :meth:`check_param`.

Snapshots
---------
``<snapshot_prefix>_iter_<N>.caffemodel`` and ``.solverstate`` (a ``caffe.SolverState``: iter,
learned_net, history, current_step) are what Caffe writes and reads.  Arrays that layers carry
across iterations (``Layer.get_state()``, e.g. an RBM's persistent chains) go into two extension
fields of the SolverState (``pycaffe_layer_state`` blobs named by ``pycaffe_layer_state_name``),
which Caffe skips.  Resuming bit for bit
also needs the random generator and the data layers' read positions, which the schema has no
room for, so they go to a sidecar ``<...>.solverstate.rng`` (JSON)::

    {"format": "pycaffe_lite.solverstate.rng/1", "iter": N,
     "rng": <pycaffe_lite.rng.get_state()>,
     "train_data_positions": {layer: position}, "test_data_positions": [{layer: position}, ...]}

A solverstate without its sidecar (e.g. one written by Caffe) still restores; only the
random stream and data order then differ from an uninterrupted run.  Every file is written
atomically (temp file in the same folder, then ``os.replace``); the sidecar is written before
the solverstate and carries ``iter``, so a crash in between cannot pair mismatched files.

Plateau, early stopping, best snapshot
--------------------------------------
``lr_policy: "plateau"``, ``early_stopping_patience`` and ``plateau_output`` (extension fields)
watch one test net output through a :class:`~pycaffe_lite.solvers.plateau.PlateauMonitor`:
the rate is divided when the output stalls, training stops early when it stalls for long
(:attr:`early_stopped`; ``solve`` then finishes as at ``max_iter``), each new best is written to
``<prefix>_best.caffemodel`` and the end of :meth:`solve` logs
``Best <output> = X at iteration I (snapshot: ...)``.  The monitor's state goes into the
SolverState's ``plateau_state`` extension.

Interrupts
----------
Inside :meth:`solve` (main thread), the first Ctrl-C asks the solver to stop after the
current iteration; it then snapshots, logs ``Snapshotting and stopping (interrupted)``,
sets :attr:`interrupted` and returns normally (the CLI should exit 130 so that scripts can
tell the run did not finish).  A second Ctrl-C aborts at once with ``KeyboardInterrupt`` and
no snapshot.  :meth:`request_stop` does what the first Ctrl-C does.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

from ..blob import Blob, proto_shape, proto_values
from ..errors import DataError, NetConfigError, ShapeError, SolverConfigError, TrainingDivergedError, where
from ..io.prototxt import upgrade_solver_type
from ..kernels import solver_updates as K
from ..log import cfmt, logger
from .lr_policy import learning_rate
from .plateau import PlateauMonitor, is_active

TRAIN, TEST = 0, 1

SIDECAR_SUFFIX = ".rng"
SIDECAR_FORMAT = "pycaffe_lite.solverstate.rng/1"

ProgressFn = Callable[[int, int, float], object]


# ------------------------------------------------------------------------------ loading
def load_solver_param(source, with_lines: bool = False):
    """``(SolverParameter copy, filename or None)`` from a path, prototxt text, a
    ``caffe.SolverParameter`` or anything with ``.param`` / ``.filename`` (a ParsedSolver).

    ``with_lines=True`` adds a third item: ``{top-level field: line}`` when known."""
    from ..proto import caffe_pb2

    lines: dict = {}
    if isinstance(source, caffe_pb2.SolverParameter):
        param, filename = source, None
    elif isinstance(getattr(source, "param", None), caffe_pb2.SolverParameter):
        param, filename = source.param, getattr(source, "filename", None)
        lines = dict(getattr(source, "field_lines", None) or {})
    elif isinstance(source, (str, os.PathLike)):
        from ..io.prototxt import read_solver

        parsed = read_solver(source)
        param, filename = parsed.param, parsed.filename
        lines = dict(getattr(parsed, "field_lines", None) or {})
    else:
        raise TypeError(f"a solver needs a path, prototxt text or a SolverParameter, not {type(source).__name__}")
    copy = caffe_pb2.SolverParameter()
    copy.CopyFrom(param)
    upgrade_solver_type(copy, filename, lines.get("type") or lines.get("solver_type"))
    return (copy, filename, lines) if with_lines else (copy, filename)


class _Source:
    """A parsed solver (param, filename, field_lines), so get_solver reads a file once."""

    def __init__(self, param, filename, field_lines=None):
        self.param, self.filename, self.field_lines = param, filename, field_lines or {}


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view for the kernels (blob storage is always contiguous)."""
    return a.reshape(-1)


def _forward_loss(net) -> float:
    f = getattr(net, "forward_loss", None)
    return float(f() if f is not None else net.forward())


# ------------------------------------------------------------------------------ Solver
class Solver:
    """Base of every solver: builds the nets, runs ``step``/``solve``/``test``, snapshots.

    Parameters
    ----------
    param_or_path : str | os.PathLike | caffe.SolverParameter | ParsedSolver
        The solver definition (a solver prototxt path or text, or a parsed one).
    train_net : Net, optional
        Train this net instead of building one from the ``net``/``train_net`` fields.
    progress : callable, optional
        ``progress(iter, max_iter, smoothed_loss)`` after every iteration (a progress bar).
    level, stages : optional
        Override ``train_state``'s level / add stages, as ``caffe train --level/--stage`` do.

    Attributes
    ----------
    net, test_nets, param, filename, iter, current_step, smoothed_loss, history (list of
    Blob: one per learnable parameter per history set), callbacks (objects with optional
    ``on_start()`` / ``on_gradients_ready()``), progress, last_snapshot, interrupted,
    monitor (a PlateauMonitor or None), early_stopped.
    """

    type: str = ""
    #: history blobs kept per learnable parameter (Adam and AdaDelta keep two)
    num_history_sets: int = 1

    def __init__(self, param_or_path, *, train_net=None, progress: ProgressFn | None = None,
                 level: int | None = None, stages=None) -> None:
        from google.protobuf import text_format

        self.param, self.filename, self.field_lines = load_solver_param(param_or_path, with_lines=True)
        self.where = where(self.filename, None)
        if level is not None:
            self.param.train_state.level = int(level)
        if stages:
            self.param.train_state.stage.extend(stages)
        self._check_common()
        self.check_param()
        logger.info("Initializing solver from parameters: \n%s", text_format.MessageToString(self.param))
        if self.param.random_seed >= 0:
            from ..rng import set_random_seed

            set_random_seed(self.param.random_seed)
        self.net = train_net if train_net is not None else self._init_train_net()
        self.test_nets: list = self._init_test_nets()
        self.monitor = PlateauMonitor(self.param, self.test_nets, self._err) if is_active(self.param) else None
        self.early_stopped = False
        for w in self._weights_files():
            logger.info("Copying weights from %s", w)
            for n in [self.net, *self.test_nets]:
                n.copy_from(w)
        logger.info("Solver scaffolding done.")
        self.iter = 0
        self.current_step = 0
        self.smoothed_loss = 0.0
        self._losses: list = []
        self.callbacks: list = []
        self.progress = progress
        #: holds BLAS to one thread while the machine is busy (pycaffe_lite._threads)
        self.busy_guard = None
        self.last_snapshot: str | None = None
        self._last_snapshot_iter: int | None = None
        self._snapshots: list[tuple[int, str]] = []  # (iter, solverstate) written or restored
        self.interrupted = False
        self.test_scores: list = [None] * len(self.test_nets)
        self._stop_requested = False
        self._abort = False
        self._in_update = False
        self.history: list[Blob] = []
        self.pre_solve()

    # ---------------------------------------------------------------- set-up / checks
    def _err(self, msg: str, field: str | None = None) -> SolverConfigError:
        """A SolverConfigError prefixed with ``solver_file:line:`` (the line of ``field`` if known)."""
        return SolverConfigError(f"{where(self.filename, self.field_lines.get(field) if field else None)}{msg}")

    def _check_common(self) -> None:
        p = self.param
        if p.average_loss < 1:
            raise self._err(f"average_loss must be >= 1 (got {p.average_loss})", "average_loss")
        if p.iter_size < 1:
            raise self._err(f"iter_size must be >= 1 (got {p.iter_size})", "iter_size")
        if p.regularization_type not in ("L1", "L2"):
            raise self._err(f"unknown regularization_type '{p.regularization_type}'; use \"L2\" or \"L1\"",
                            "regularization_type")
        if p.snapshot_format != p.BINARYPROTO:
            raise self._err("snapshot_format HDF5 is not supported: only BINARYPROTO here "
                            "(remove snapshot_format or set it to BINARYPROTO)", "snapshot_format")
        if p.snapshot < 0 or p.display < 0 or p.test_interval < 0:
            raise self._err("snapshot, display and test_interval must be >= 0")
        learning_rate(p, 0, 0, where(self.filename, self.field_lines.get("lr_policy")))  # an unknown/unset policy or bad settings fail now, not at iter 0
        if p.snapshot > 0 and not p.HasField("snapshot_prefix") and not self._default_prefix():
            raise self._err(f"snapshot: {p.snapshot} is set but snapshot_prefix is not", "snapshot")
        prefix = self.snapshot_prefix
        if prefix is not None and p.snapshot > 0:  # Caffe probes only when periodic snapshots are on
            folder = os.path.dirname(os.path.abspath(prefix))
            probe = folder
            while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
                probe = os.path.dirname(probe)
            try:  # Caffe probes by writing a file; os.access says yes to root even on read-only mounts
                with tempfile.TemporaryFile(dir=probe):
                    pass
            except OSError:
                raise self._err(f"cannot write to snapshot_prefix '{prefix}': make sure the folder "
                                f"{folder} exists and is writable", "snapshot_prefix") from None

    def check_param(self) -> None:
        """Solver-specific checks (e.g. AdaGrad refuses momentum); raise SolverConfigError."""

    def pre_solve(self) -> None:
        """Create the zeroed history blobs: ``num_history_sets`` sets of one per learnable param."""
        params = self.net.learnable_params
        self.history = [Blob(p.shape, name=f"history[{s * len(params) + i}]")
                        for s in range(self.num_history_sets) for i, p in enumerate(params)]

    def _default_prefix(self) -> str | None:
        # Unset snapshot_prefix: the solver file's path without extension (what later Caffe does).
        if self.filename and os.path.isfile(self.filename):
            return os.path.splitext(self.filename)[0]
        return None

    @property
    def snapshot_prefix(self) -> str | None:
        return self.param.snapshot_prefix if self.param.HasField("snapshot_prefix") else self._default_prefix()

    def _resolve(self, path: str, field: str) -> str:
        """A net/weights path as Caffe reads it (relative to the working directory), falling
        back to the solver file's folder, which is what people usually mean."""
        if os.path.exists(path):
            return path
        tried = [os.path.abspath(path)]
        if self.filename and os.path.isfile(self.filename) and not os.path.isabs(path):
            alt = os.path.join(os.path.dirname(os.path.abspath(self.filename)), path)
            if os.path.exists(alt):
                logger.debug("%s '%s' is not in the working directory %s; using %s (relative to the solver file)",
                             field, path, os.getcwd(), alt)
                return alt
            tried.append(alt)
        raise self._err(f"{field}: '{path}' not found (looked for {' and '.join(tried)}); "
                        "paths are relative to the working directory, as in Caffe", field)

    def _build_net(self, kind: str, source, phase: int, solver_state, label: str):
        """Build a net from a file (kind 'file') or an inline NetParameter with the merged state:
        phase, then the net's own ``state``, then the solver's train_state/test_state."""
        from ..io.prototxt import read_net
        from ..net import Net
        from ..proto import caffe_pb2

        if kind == "file":
            src = read_net(self._resolve(source, label))
            net_param = src.param
        else:
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(source)
            src = net_param
        state = caffe_pb2.NetState()
        state.phase = phase
        state.MergeFrom(net_param.state)
        if solver_state is not None:
            state.MergeFrom(solver_state)
        net_param.state.CopyFrom(state)
        return Net(src, phase=state.phase, level=state.level, stages=list(state.stage))

    def _init_train_net(self):
        p = self.param
        fields = ("net", "net_param", "train_net", "train_net_param")
        given = [f for f in fields if p.HasField(f)]
        if len(given) != 1:
            what = "no train net" if not given else f"{len(given)} train nets ({', '.join(given)})"
            raise self._err(f"{what}: give exactly one of the fields {', '.join(fields)}, "
                            'e.g. net: "models/lenet/lenet_train_test.prototxt"')
        f = given[0]
        if f.endswith("_param"):
            logger.info("Creating training net specified in %s.", f)
            return self._build_net("param", getattr(p, f), TRAIN, p.train_state, f)
        logger.info("Creating training net from %s file: %s", f, getattr(p, f))
        return self._build_net("file", getattr(p, f), TRAIN, p.train_state, f)

    def _init_test_nets(self) -> list:
        p = self.param
        generic = [f for f in ("net", "net_param") if p.HasField(f)]
        if len(generic) > 1:
            raise self._err("both net and net_param are given; use one")
        specific = len(p.test_net_param) + len(p.test_net)
        n_iter = len(p.test_iter)
        if (generic and n_iter < specific) or (not generic and n_iter != specific):
            raise self._err(
                f"test_iter must be given once per test net: {n_iter} test_iter value(s) for {specific} "
                f"test net(s) from test_net/test_net_param"
                + (f" (plus one per extra test_iter from {generic[0]})" if generic else ""),
                "test_iter",
            )
        n = n_iter if generic else specific
        if p.test_state and len(p.test_state) != n:
            raise self._err(f"test_state must be unset or given once per test net ({len(p.test_state)} for {n})")
        if n and p.test_interval <= 0:  # valid in Caffe: the test nets are built but never run
            logger.warning("%d test net(s) but test_interval is %d: they will not be run", n, p.test_interval)
        if any(t <= 0 for t in p.test_iter):
            raise self._err(f"test_iter values must be > 0 (got {list(p.test_iter)})")
        sources = [("param", tp, "test_net_param") for tp in p.test_net_param]
        sources += [("file", tf, "test_net") for tf in p.test_net]
        for _ in range(n - specific):
            sources.append(("param", p.net_param, "net_param") if generic[0] == "net_param"
                           else ("file", p.net, "net"))
        nets = []
        for i, (kind, src, label) in enumerate(sources):
            desc = label if kind == "param" else f"{label} file: {src}"
            logger.info("Creating test net (#%d) specified by %s", i, desc)
            nets.append(self._build_net(kind, src, TEST, p.test_state[i] if p.test_state else None, label))
        return nets

    def _weights_files(self) -> list[str]:
        files = [w for entry in self.param.weights for w in entry.split(",") if w]
        return [self._resolve(w, "weights") for w in files]

    # ---------------------------------------------------------------- training loop
    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        self._losses = []
        self.smoothed_loss = 0.0
        timer = time.perf_counter()
        iterations_last = self.iter
        if self.busy_guard is None:
            from .._threads import BusyMachineGuard

            self.busy_guard = BusyMachineGuard()
        while self.iter < stop_iter:
            self.busy_guard.tick()
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                self.test_all()
                if self._stop_requested or self.early_stopped:
                    break
            for cb in self.callbacks:
                getattr(cb, "on_start", _noop)()
            display = p.display and self.iter % p.display == 0
            loss = np.float32(0.0)
            for _ in range(p.iter_size):
                one = _forward_loss_backward(self.net)
                if not math.isfinite(one):
                    self._diverged(one)
                loss += np.float32(one)
            loss /= np.float32(p.iter_size)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            if display:
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iterations_last) / (lapse if lapse else 1.0)
                logger.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, cfmt(per_s),
                            cfmt(lapse), p.display, cfmt(self.smoothed_loss))
                timer = time.perf_counter()
                iterations_last = self.iter
                self._log_outputs(self.net, "Train", None)
            for cb in self.callbacks:
                getattr(cb, "on_gradients_ready", _noop)()
            self._in_update = True
            self.apply_update()
            # iter counts the updates applied so far
            self.iter += 1
            self._in_update = False
            if p.snapshot and self.iter % p.snapshot == 0:
                self.snapshot()
            if self.progress is not None:
                self.progress(self.iter, p.max_iter, self.smoothed_loss)
            if self._stop_requested:
                break

    def solve(self, resume_file: str | os.PathLike | None = None) -> None:
        """Train to ``max_iter`` (Caffe's Solver::Solve), optionally resuming a solverstate."""
        p = self.param
        logger.info("Solving %s", self.net.name)
        logger.info("Learning Rate Policy: %s", p.lr_policy)
        self._stop_requested = self._abort = self._in_update = False
        self.interrupted = self.early_stopped = False
        if resume_file:
            logger.info("Restoring previous solver status from %s", os.fspath(resume_file))
            self.restore(resume_file)
        start_iter = self.iter
        with self._sigint_stops():
            try:
                self.step(p.max_iter - self.iter)
            except KeyboardInterrupt:
                if self._abort or self._in_update:
                    raise  # a second Ctrl-C, or weights half updated: nothing consistent to save
                self._stop_requested = True
            finally:
                if self.busy_guard is not None:
                    self.busy_guard.close()
        if self._stop_requested:
            self.interrupted = True
            logger.info("Snapshotting and stopping (interrupted)")
            if self._last_snapshot_iter != self.iter:
                self.snapshot()
            logger.info("Optimization stopped early.")
            return
        if self.early_stopped:
            m = self.monitor
            logger.info("Early stopping at iteration %d: %s has not improved for %d tests (best %s at iteration %d)",
                        self.iter, m.output, m.tests_since_best, cfmt(m.best), m.best_iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            if self.snapshot_prefix is None:
                logger.warning("snapshot_prefix is not set: no snapshot after training")
            else:
                self.snapshot()
        # One more forward pass only to display the loss of the final weights (as Caffe does).
        if p.display and self.iter % p.display == 0:
            loss = _forward_loss(self.net)
            self._update_smoothed_loss(np.float32(loss), start_iter, p.average_loss)
            logger.info("Iteration %d, loss = %s", self.iter, cfmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0 and not self.early_stopped:
            self.test_all()
        if self.monitor is not None and self.monitor.best is not None:
            logger.info("%s", self.monitor.describe_best())
        logger.info("Optimization Done.")

    def request_stop(self) -> None:
        """Stop after the current iteration (what the first Ctrl-C does inside ``solve``)."""
        self._stop_requested = True

    @contextlib.contextmanager
    def _sigint_stops(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):
            if self._stop_requested:
                self._abort = True
                signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
                raise KeyboardInterrupt
            logger.warning("Interrupt received: stopping after this iteration (Ctrl-C again to abort at once)")
            self._stop_requested = True

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    def _update_smoothed_loss(self, loss, start_iter: int, average_loss: int) -> None:
        # float32 arithmetic like Caffe's Dtype, so displayed losses agree digit for digit
        loss = np.float32(loss)
        smoothed = np.float32(self.smoothed_loss)
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            size = len(self._losses)
            smoothed = (smoothed * np.float32(size - 1) + loss) / np.float32(size)
        else:
            idx = (self.iter - start_iter) % average_loss
            smoothed = smoothed + (loss - self._losses[idx]) / np.float32(average_loss)
            self._losses[idx] = loss
        self.smoothed_loss = float(smoothed)

    def _log_outputs(self, net, kind: str, values) -> None:
        """``    Train net output #k: name = v`` lines (``(* w = v loss)`` for weighted outputs)."""
        k = 0
        for j, name in enumerate(net.outputs):
            data = net.blobs[name].data.ravel() if values is None else values[j]
            w = np.float32(net.blob_loss_weights.get(name, 0.0))
            for v in data:
                extra = f" (* {cfmt(w)} = {cfmt(w * np.float32(v))} loss)" if w else ""
                logger.info("    %s net output #%d: %s = %s%s", kind, k, name, cfmt(v), extra)
                k += 1

    def _diverged(self, loss: float) -> None:
        culprit = self.net.first_nonfinite() if hasattr(self.net, "first_nonfinite") else None
        # a snapshot taken at this iteration holds the very weights that gave this loss
        good = [path for it, path in self._snapshots if it < self.iter]
        last = good[-1] if good else None
        msg = (f"Iteration {self.iter}: loss is {cfmt(loss)}; first produced by "
               f"{culprit or 'no layer top (the loss itself overflowed)'}. The last good snapshot is "
               f"{last or 'none'}. Lower base_lr (now {cfmt(self.param.base_lr)}) or set clip_gradients, "
               "then retrain" + (" or resume from that snapshot." if last else "."))
        logger.error(msg)
        raise TrainingDivergedError(msg)

    # ---------------------------------------------------------------- testing
    def test_all(self) -> list:
        """Test every test net; returns their :meth:`test` results."""
        out = []
        for i in range(len(self.test_nets)):
            if self._stop_requested:
                break
            out.append(self.test(i))
        return out

    def test(self, test_net_id: int = 0):
        """``test_iter`` forward passes of a test net; logs and returns the mean of every output.

        Returns ``{output name: mean}`` (a float, or a float32 array for multi-element outputs),
        or None when interrupted.
        """
        p = self.param
        logger.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        self._share_trained_layers(net)
        n = p.test_iter[test_net_id]
        scores = None
        loss = np.float32(0.0)
        for _ in range(n):
            if self._stop_requested:
                logger.info("Test interrupted.")
                return None
            iter_loss = _forward_loss(net)
            if p.test_compute_loss:
                loss += np.float32(iter_loss)
            result = [net.blobs[name].data.ravel() for name in net.outputs]
            if scores is None:
                scores = [r.astype(np.float32, copy=True) for r in result]
            else:
                for s, r in zip(scores, result):
                    s += r  # float32 sums, as Caffe accumulates in Dtype
        if p.test_compute_loss:
            logger.info("Test loss: %s", cfmt(loss / np.float32(n)))
        means = [s / np.float32(n) for s in scores or []]
        self._log_outputs(net, "Test", means)
        out = {name: (float(m[0]) if m.size == 1 else m) for name, m in zip(net.outputs, means)}
        self.test_scores[test_net_id] = out
        if self.monitor is not None and test_net_id == self.monitor.net_id:
            self._watch(out[self.monitor.output])
        return out

    def _watch(self, value: float) -> None:
        """Give the monitor this test's value; divide the rate, snapshot the best or stop as it says."""
        m = self.monitor
        # only the plateau policy needs the rate here (others, e.g. multistep, would log a step change)
        rate = learning_rate(self.param, self.iter, self.current_step, self.where)[0] if m.reduces else 0.0
        d = m.update(value, self.iter, rate)
        if not d.counted:
            logger.debug("Iteration %d was tested before (resumed run): %s not counted again", self.iter, m.output)
            return
        if d.improved:
            path = self._snapshot_best()
            logger.info("New best %s = %s at iteration %d%s", m.output, cfmt(value), self.iter,
                        f"; wrote {path}" if path else "")
            return
        if d.reduce:
            self.current_step += 1
            new_rate, _ = learning_rate(self.param, self.iter, self.current_step, self.where)
            logger.info("Plateau: %s has not improved for %d tests (best %s at iteration %d): lr %s -> %s",
                        m.output, m.patience, cfmt(m.best), m.best_iter, cfmt(rate), cfmt(new_rate))
        if d.stop:
            self.early_stopped = True

    def _snapshot_best(self) -> str | None:
        """Write the weights just tested to ``<prefix>_best.caffemodel`` (atomically) if wanted."""
        from ..io.caffemodel import write_caffemodel

        if not self.param.snapshot_best or self.snapshot_prefix is None:
            return None
        path = f"{self.snapshot_prefix}_best.caffemodel"
        write_caffemodel(self.net.to_proto(), path)
        self.monitor.best_snapshot = path
        return path

    def _share_trained_layers(self, test_net) -> None:
        """Point the test net's parameter blobs at the train net's (Caffe's ShareTrainedLayersWith)."""
        share = getattr(test_net, "share_trained_layers_with", None)
        if share is not None:
            share(self.net)
            return
        train_params = self.net.params
        for name, blobs in test_net.params.items():
            src = train_params.get(name)
            if src is None:
                continue
            if len(src) != len(blobs):
                raise NetConfigError(f"layer '{name}' has {len(blobs)} parameter blobs in the test net "
                                     f"but {len(src)} in the train net")
            for j, (tb, sb) in enumerate(zip(blobs, src)):
                if tb is sb:
                    continue
                if tb.shape != sb.shape:
                    raise ShapeError(f"layer '{name}' parameter blob {j} has shape {tb.shape} in the test net "
                                     f"but {sb.shape} in the train net")
                tb.share_data(sb)

    # ---------------------------------------------------------------- the update
    def get_learning_rate(self) -> float:
        """The rate for the current iteration (advances ``current_step`` for multistep)."""
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step, self.where)
        return rate

    def apply_update(self) -> None:
        """Rate, clip, then normalize -> regularize -> compute_update_value per param; net.update()."""
        p = self.param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            logger.info("Iteration %d, lr = %s", self.iter, cfmt(rate))
        self.clip_gradients()
        for param_id in range(len(self.net.learnable_params)):
            self.normalize(param_id)
            self.regularize(param_id)
            self.compute_update_value(param_id, rate)
        self.net.update()

    def clip_gradients(self) -> None:
        """Scale all diffs by clip/norm when their global L2 norm exceeds ``clip_gradients`` (>= 0)."""
        clip = self.param.clip_gradients
        if clip < 0:
            return
        params = self.net.learnable_params
        norm = math.sqrt(sum(K.sumsq(_flat(b.diff)) for b in params))
        if norm > clip:
            scale = clip / norm
            logger.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                        cfmt(norm), cfmt(clip), cfmt(scale))
            for b in params:
                K.scale_inplace(_flat(b.diff), np.float32(scale))

    def normalize(self, param_id: int) -> None:
        """diff /= iter_size (gradients accumulated over iter_size forward/backward passes)."""
        if self.param.iter_size == 1:
            return
        b = self.net.learnable_params[param_id]
        K.scale_inplace(_flat(b.diff), np.float32(1.0 / self.param.iter_size))

    def regularize(self, param_id: int) -> None:
        """Weight decay: L2 ``diff += d*w`` or L1 ``diff += d*sign(w)``, d = weight_decay * decay_mult."""
        local_decay = self.param.weight_decay * self.net.params_weight_decay[param_id]
        if not local_decay:
            return
        b = self.net.learnable_params[param_id]
        rt = self.param.regularization_type
        if rt == "L2":
            K.l2_regularize(_flat(b.data), _flat(b.diff), np.float32(local_decay))
        elif rt == "L1":
            K.l1_regularize(_flat(b.data), _flat(b.diff), np.float32(local_decay))
        else:
            raise self._err(f"unknown regularization_type '{rt}'; use \"L2\" or \"L1\"")

    def compute_update_value(self, param_id: int, rate: float) -> None:
        """Turn parameter ``param_id``'s diff into the step that ``net.update()`` subtracts."""
        raise NotImplementedError(f"{type(self).__name__}.compute_update_value")

    def local_rate(self, param_id: int, rate: float) -> float:
        return rate * self.net.params_lr[param_id]

    # ---------------------------------------------------------------- snapshots
    def _snapshot_filename(self, extension: str) -> str:
        return f"{self.snapshot_prefix}_iter_{self.iter}{extension}"

    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_<N>.caffemodel``, its ``.solverstate`` and the ``.rng`` sidecar."""
        from ..io.caffemodel import atomic_write_bytes, write_caffemodel
        from ..proto import caffe_pb2

        if self.snapshot_prefix is None:
            raise self._err("cannot snapshot: snapshot_prefix is not set")
        model = self._snapshot_filename(".caffemodel")
        logger.info("Snapshotting to binary proto file %s", model)
        write_caffemodel(self.net.to_proto(write_diff=self.param.snapshot_diff), model)
        state_path = self._snapshot_filename(".solverstate")
        state = caffe_pb2.SolverState()
        state.iter = self.iter
        state.learned_net = model
        state.current_step = self.current_step
        for h in self.history:
            h.to_proto(state.history.add())
        _save_layer_states(self.net, state)
        if self.monitor is not None:
            self.monitor.to_proto(state.plateau_state)
        logger.info("Snapshotting solver state to binary proto file %s", state_path)
        atomic_write_bytes(json.dumps(self._sidecar()).encode(), state_path + SIDECAR_SUFFIX)
        atomic_write_bytes(state.SerializeToString(), state_path)
        self.last_snapshot = state_path
        self._last_snapshot_iter = self.iter
        self._snapshots.append((self.iter, state_path))
        return model, state_path

    def _sidecar(self) -> dict:
        from ..rng import get_state

        return {
            "format": SIDECAR_FORMAT,
            "iter": self.iter,
            "rng": get_state(),
            "train_data_positions": _data_positions(self.net),
            "test_data_positions": [_data_positions(n) for n in self.test_nets],
        }

    def restore(self, state_file: str | os.PathLike) -> None:
        """Resume from a ``.solverstate``: weights (learned_net), history, iter, current_step,
        and the random/data state from the ``.rng`` sidecar when there is one."""
        from ..io.caffemodel import read_message
        from ..proto import caffe_pb2

        path = os.fspath(state_file)
        if path.endswith(".h5"):
            raise SolverConfigError(f"{path}: HDF5 solverstates are not supported (only BINARYPROTO here)")
        state = read_message(path, caffe_pb2.SolverState(), "solverstate")
        if state.iter < 0 or state.current_step < 0:
            raise DataError(f"{path}: corrupt solverstate (iter {state.iter}, current_step {state.current_step})")
        if len(state.history) != len(self.history):
            n = len(self.net.learnable_params)
            raise DataError(
                f"{path}: {len(state.history)} history blobs, but the {self.type} solver of net "
                f"'{self.net.name}' keeps {len(self.history)} ({self.num_history_sets} per parameter, {n} "
                "parameters); was it written for another net or solver type?"
            )
        names = getattr(self.net, "learnable_param_names", None)
        for i, (h, bp) in enumerate(zip(self.history, state.history)):
            values = proto_values(bp, "data")
            shape = tuple(proto_shape(bp))
            if values.size != h.count() or (shape != h.shape and int(np.prod(shape)) != h.count()):
                pid = i % max(len(self.net.learnable_params), 1)
                label = f"'{names[pid]}'" if names else f"#{pid}"
                raise DataError(f"{path}: history blob {i} has shape {shape} ({values.size} values) but "
                                f"parameter {label} has shape {h.shape}")
            h.data[...] = values.reshape(h.shape)
        if state.learned_net:
            self.net.copy_from(self._find_learned_net(state.learned_net, path))
        _restore_layer_states(self.net, state, path)
        if self.monitor is not None:
            if state.HasField("plateau_state"):
                self.monitor.from_proto(state.plateau_state)
            else:
                logger.warning("%s holds no plateau state (written without plateau_output / early stopping): "
                               "the best %s is forgotten and counting starts afresh", path, self.monitor.output)
        self.iter = state.iter
        self.current_step = state.current_step
        self._restore_sidecar(path + SIDECAR_SUFFIX, state.iter)
        self.last_snapshot = path
        self._last_snapshot_iter = self.iter
        self._snapshots.append((self.iter, path))

    def _find_learned_net(self, learned: str, state_path: str) -> str:
        folder = os.path.dirname(os.path.abspath(state_path))
        candidates = [learned]
        if not os.path.isabs(learned):
            candidates.append(os.path.join(folder, learned))
        candidates.append(os.path.join(folder, os.path.basename(learned)))
        for c in candidates:
            if os.path.isfile(c):
                if c != learned:
                    logger.debug("learned_net '%s' of %s not found as given; using %s", learned, state_path, c)
                return c
        raise DataError(f"{state_path}: its weights file (learned_net) '{learned}' was not found "
                        f"(also looked in {folder})")

    def _restore_sidecar(self, path: str, it: int) -> None:
        from ..rng import set_state

        if not os.path.isfile(path):
            logger.warning("%s not found: weights, history and iteration are restored, but random draws and "
                           "data order will differ from an uninterrupted run", path)
            return
        try:
            with open(path, encoding="utf-8") as f:
                side = json.load(f)
            if side.get("format") != SIDECAR_FORMAT:
                raise ValueError(f"unknown format {side.get('format')!r}")
            side_iter = int(side["iter"])
            rng_state = side["rng"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: corrupt random-state file ({e}); delete it to resume without "
                            "bit-exact random draws") from None
        if side_iter != it:
            logger.warning("%s is for iteration %d, not %d: ignored", path, side_iter, it)
            return
        set_state(rng_state)
        _set_data_positions(self.net, side.get("train_data_positions", {}), path)
        for net, pos in zip(self.test_nets, side.get("test_data_positions", [])):
            _set_data_positions(net, pos, path)


# ------------------------------------------------------------------------------ helpers
def _noop() -> None:
    pass


def _forward_loss_backward(net) -> float:
    return float(net.forward_backward())


def _data_positions(net) -> dict:
    out = {}
    for name, layer in zip(getattr(net, "layer_names", []), getattr(net, "layers", [])):
        get = getattr(layer, "get_position", None)
        if get is not None:
            out[name] = int(get())
    return out


def _save_layer_states(net, state) -> None:
    """Append every layer's ``get_state()`` arrays to the SolverState's extension fields
    (``pycaffe_layer_state`` blobs, each named by its layer in ``pycaffe_layer_state_name``)."""
    for name, layer in zip(getattr(net, "layer_names", []), getattr(net, "layers", [])):
        get = getattr(layer, "get_state", None)
        for array in (get() if get is not None else []):
            array = np.ascontiguousarray(array, dtype=np.float32)
            bp = state.pycaffe_layer_state.add()
            bp.shape.dim.extend(array.shape)
            bp.data.extend(array.ravel().tolist())
            state.pycaffe_layer_state_name.append(name)


def _restore_layer_states(net, state, path: str) -> None:
    """Give each layer back the arrays :func:`_save_layer_states` wrote for it."""
    names, blobs = state.pycaffe_layer_state_name, state.pycaffe_layer_state
    if len(names) != len(blobs):
        raise DataError(f"{path}: corrupt solverstate ({len(blobs)} layer-state blobs but {len(names)} names)")
    saved: dict[str, list] = {}
    for name, bp in zip(names, blobs):
        saved.setdefault(name, []).append(proto_values(bp, "data").reshape(proto_shape(bp)))
    for name, layer in zip(getattr(net, "layer_names", []), getattr(net, "layers", [])):
        get = getattr(layer, "get_state", None)
        if get is None:
            continue
        arrays = saved.pop(name, None)
        if arrays is not None:
            layer.set_state(arrays)
        elif len(get()):
            logger.warning("%s holds no saved state for layer '%s' (e.g. its persistent chains): it starts afresh, "
                           "so training will differ from an uninterrupted run", path, name)
    for name in saved:
        logger.warning("%s: saved state of layer '%s' is not used: net '%s' has no such layer", path, name,
                       getattr(net, "name", "?"))


def _set_data_positions(net, positions: dict, path: str) -> None:
    layers = dict(zip(getattr(net, "layer_names", []), getattr(net, "layers", [])))
    for name, pos in positions.items():
        layer = layers.get(name)
        if layer is None or not hasattr(layer, "set_position"):
            logger.warning("%s: data layer '%s' is not in net '%s'; its read position is not restored",
                           path, name, getattr(net, "name", "?"))
            continue
        layer.set_position(int(pos))

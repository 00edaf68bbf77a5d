"""Two cores without BLAS's own threads: run the two halves of a job at once, one on a persistent
worker thread and one on the calling thread.

OpenBLAS's threads spin and yield while they wait for each other; on a 2-core machine whose other
core is busy that made the RBM layer's small products 10-100x slower.  Here each half calls
single-threaded BLAS (and Numba kernels compiled with ``nogil=True``), which release the GIL, so
the two halves run in parallel; the threads sleep on a lock when idle, so a busy core delays a
half but nothing spins.  The caller splits the work so that the halves write disjoint parts of
preallocated outputs: the numbers are the same as running both halves one after the other.

One worker serves the whole process (made at the first use, a daemon thread; remade after a
fork).  A caller that finds it busy (another thread is using it) runs both halves itself.

Two workers: :func:`run_halves` hands any Python callable to a Python thread (:class:`_Worker`);
:func:`matmul_halves` and :func:`gemm_halves` hand a matrix product to a thread that runs BLAS
from a Numba loop and never needs the GIL (:class:`_GemmWorker`), for products of 50-100 us
where the Python worker's wake-ups and GIL hand-offs ate a third of the gain.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from . import _blas
from ._threads import available_cpus
from .kernels import spin

__all__ = ["available_cpus", "matmul_halves", "run_halves", "split_point"]


def split_point(n: int, align: int = 16) -> int:
    """Where to cut ``n`` items in two: the multiple of ``align`` nearest ``n / 2`` (so that the
    second half of a float32 row starts on a 64-byte boundary), within ``1 .. n - 1`` for
    ``n >= 2``."""
    if n < 2:
        return n
    cut = round(n / 2 / align) * align
    return min(max(cut, 1), n - 1)


class _Job:
    __slots__ = ("arg", "claim", "done", "error", "fn", "seq")

    def __init__(self, fn: Callable, arg, seq: int = 0) -> None:
        self.fn, self.arg, self.error, self.seq = fn, arg, None, seq
        self.claim = threading.Lock()  # taken by whichever thread runs the half
        self.done = threading.Lock()   # held until the worker has run it
        self.done.acquire()


class _Worker:
    """One daemon thread taking halves from a queue.  The caller runs its own half, then takes
    back the worker's half if the worker has not started it yet (its core busy with another
    process, or the thread not yet awake): a busy core then costs a hand-over, not a half."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.busy = threading.Lock()   # held by the caller that owns the worker for one job
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._finished = np.zeros(1, np.int64)  # the number of the last job the worker finished
        self._seq = 0
        from numba import config

        # without the JIT the spin would be a Python loop holding the GIL the worker needs
        self._join_checks = 0 if config.DISABLE_JIT else max(1, int(JOIN_SPIN_US * spin.checks_per_us()))
        threading.Thread(target=self._loop, name="plite-split", daemon=True).start()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if not job.claim.acquire(blocking=False):
                continue  # the caller ran it
            try:
                job.fn(job.arg)
            except BaseException as e:  # noqa: BLE001 - handed to the caller, re-raised there
                job.error = e
            spin.publish(self._finished, 0, job.seq)
            job.done.release()

    def run(self, fn: Callable, mine, theirs) -> None:
        self._seq += 1
        job = _Job(fn, theirs, self._seq)
        self._queue.put(job)
        try:
            fn(mine)
        finally:
            if job.claim.acquire(blocking=False):
                fn(theirs)  # the worker has not started: do it here
            else:
                # never return while the worker still writes; it is running its half, so watch
                # for the end without the GIL for a while (a sleeping caller took 20-35 us to wake)
                if self._join_checks:
                    spin.wait_until(self._finished, 0, job.seq, self._join_checks)
                job.done.acquire()
        if job.error is not None:
            raise job.error


_worker: _Worker | None = None
_make_lock = threading.Lock()


def _get_worker() -> _Worker:
    global _worker
    w = _worker
    if w is None or w.pid != os.getpid():  # a forked child has the object but not the thread
        with _make_lock:
            if _worker is None or _worker.pid != os.getpid():
                _worker = _Worker()
            w = _worker
    return w


def run_halves(fn: Callable, first, second) -> None:
    """``fn(first)`` on the calling thread and ``fn(second)`` on the worker, at once; returns
    when both are done and re-raises an exception of either.  ``fn`` must release the GIL for
    the halves to overlap (BLAS via NumPy, Numba ``nogil`` kernels, large ufuncs) and the two
    calls must not write to the same memory.  Runs both on the calling thread when the worker
    is busy with another caller's job."""
    w = _get_worker()
    if not w.busy.acquire(blocking=False):
        fn(first)
        fn(second)
        return
    try:
        w.run(fn, first, second)
    finally:
        w.busy.release()


class _GemmWorker:
    """A worker thread that runs products handed to it entirely in Numba, without the GIL.

    A thread woken from sleep takes 15-35 us here, and so does a thread that wants the GIL while
    the other holds it; the RBM layer's half-products take 50-70 us, so a Python worker
    (:class:`_Worker`) lost a third of each split to wake-ups.  This worker spins (bounded:
    :data:`WORKER_SPIN_US`) in :func:`pycaffe_lite.kernels.spin.serve_gemm`, which calls NumPy's
    own OpenBLAS ``sgemm`` (pycaffe_lite/_blas.py) and never touches the GIL; the caller spins on
    the done counter (:data:`CALLER_SPIN_US`).  Past those budgets both sleep, so an idle
    process costs no CPU.  The caller takes a job back (runs it itself) if the worker has not
    claimed it by the time the caller's own half is done, as :class:`_Worker` does.

    Whether splitting pays is measured, not assumed (:class:`_Chooser`): with the other core busy
    (another process, or a host that runs both virtual cores on one physical core) a split
    product took up to 1.45x the time of the whole product on the caller."""

    def __init__(self, sgemm) -> None:
        self.pid = os.getpid()
        self.busy = threading.Lock()
        self._sgemm = sgemm
        self._counters = np.zeros(24, np.int64)
        self._desc = np.zeros(16, np.int64)
        self._scal = np.zeros(2, np.float32)
        self._mine = np.zeros(16, np.int64)  # the caller's half, when it accumulates
        self._seq = 0
        self._wake = threading.Condition(threading.Lock())
        self._sleeping = False
        self.chooser = _Chooser()
        per_us = spin.checks_per_us()
        self._worker_checks = max(1, int(WORKER_SPIN_US * per_us))
        self._caller_checks = max(1, int(CALLER_SPIN_US * per_us))
        threading.Thread(target=self._loop, name="plite-gemm", daemon=True).start()

    def _loop(self) -> None:
        c, last = self._counters, 0
        while True:
            last = spin.serve_gemm(self._sgemm, c, self._desc, self._scal, last, self._worker_checks)
            with self._wake:
                self._sleeping = True
                while spin.load(c, spin.POSTED) == last:
                    self._wake.wait()
                self._sleeping = False

    def product(self, first, second, whole, alpha: float = 1.0, beta: float = 0.0, meanwhile=None) -> bool:
        """``out = alpha a @ b + beta out`` for ``whole``, either whole here or as ``first`` here and
        ``second`` on the worker at once (:class:`_Chooser` decides); False, with nothing done,
        when a view BLAS cannot take makes it impossible (with ``beta`` 0 the caller can then use
        NumPy).  ``meanwhile()`` (if given) runs here first, while the worker already computes
        its half: work that neither reads the product's output nor writes its inputs."""
        plain = alpha == 1.0 and beta == 0.0
        split = not self.chooser.whole_now()
        if split and not (_blas.describe(*second, self._desc) and (plain or _blas.describe(*first, self._mine))):
            split = False
        if not split and not (plain or _blas.describe(*whole, self._mine)):
            return False
        self._scal[0], self._scal[1] = alpha, beta
        if not split:
            if meanwhile is not None:
                meanwhile()
            self._here(whole, plain)
            return True
        c = self._counters
        self._seq += 1
        seq = self._seq
        spin.publish(c, spin.POSTED, seq)
        with self._wake:
            if self._sleeping:
                self._wake.notify()
        try:
            if meanwhile is not None:
                meanwhile()
            self._here(first, plain)
        finally:  # never return (or raise) while the worker may still write
            if spin.claim(c, spin.CLAIMED, seq):
                spin.call_gemm(self._sgemm, self._desc, self._scal)  # the worker has not started: do it here
            else:
                while not spin.wait_until(c, spin.DONE, seq, self._caller_checks):
                    time.sleep(50e-6)  # the worker's core is taken by another process
        return True

    def _here(self, t, plain: bool) -> None:
        if plain:
            np.matmul(t[0], t[1], out=t[2])
        else:
            spin.call_gemm(self._sgemm, self._mine, self._scal)


class _Chooser:
    """Split a product over the two threads, or run it whole on the caller: whichever has made
    the caller's loop faster lately.  Of every CYCLE products the first PROBE run the other way;
    the wall time from the first to the PROBE-th product of the cycle (products and everything
    the caller did between them) is compared with that of the last PROBE products, run the
    current way, and the faster way is kept for the next cycle.  Product times alone would not
    do: with the other core busy a split product itself is still faster, but the worker's spinning
    between products takes the caller's share of a core.  On an idle 2-core machine splitting wins
    (RBM epoch 0.11 vs 0.14 s); with the other core busy the whole product does (0.14 vs 0.2 s).
    A comparison whose two windows differ more than 3x (something else happened in one of them,
    e.g. a test pass) is ignored."""

    def __init__(self) -> None:
        self.whole = False   # the current way
        self.n = 0           # products so far
        self._t_probe = self._t_current = self._probe = None

    def whole_now(self) -> bool:
        """Called once before each product: run this one whole?"""
        i = self.n % CYCLE
        now = time.perf_counter()
        if i == 0:
            if self._probe is not None and self._t_current is not None:
                self._decide(self._probe, now - self._t_current)
            self._t_probe, self._probe, self._t_current = now, None, None
        elif i == PROBE and self._t_probe is not None:
            self._probe = now - self._t_probe
        elif i == CYCLE - PROBE:
            self._t_current = now
        self.n += 1
        return self.whole != (i < PROBE)

    def _decide(self, probe: float, current: float) -> None:
        if probe < current < 3 * probe:
            self.whole = not self.whole


#: How long the product worker keeps checking for the next job before it sleeps, and how long the
#: caller checks for the worker's half before it polls with sleeps (microseconds): longer than
#: the gaps between the RBM layer's products within and between iterations (~10-150 us), short
#: enough that a finished training run leaves no thread spinning.
WORKER_SPIN_US = 300
CALLER_SPIN_US = 2000
#: How long a caller of :func:`run_halves` watches for the worker's half to end (without the GIL)
#: before it sleeps on the lock: the halves are split evenly, so the worker usually ends within
#: tens of microseconds of the caller.
JOIN_SPIN_US = 1000
#: See _Chooser: products per cycle, and products run the other way at the start of each.
CYCLE = 1024
PROBE = 64

_gemm_worker: _GemmWorker | None | bool = False  # False: not made yet; None: not available


def _get_gemm_worker() -> _GemmWorker | None:
    global _gemm_worker
    w = _gemm_worker
    if w is False or (w is not None and w.pid != os.getpid()):
        with _make_lock:
            if _gemm_worker is False or (_gemm_worker is not None and _gemm_worker.pid != os.getpid()):
                fn = _blas.sgemm()
                _gemm_worker = _GemmWorker(fn) if fn is not None else None
            w = _gemm_worker
    return w


def gemm_halves(first, second, whole, alpha: float, beta: float, meanwhile=None) -> bool:
    """``out = alpha a @ b + beta out`` for the ``(a, b, out)`` triple ``whole``, split as
    ``first`` and ``second`` (their outputs two disjoint parts of ``whole``'s) over two threads
    when that is faster (see :func:`matmul_halves`); False, with nothing done, when NumPy's
    ``sgemm`` cannot be called directly, a view is not BLAS-shaped, or the worker is busy with
    another caller (the caller then does the product another way, and ``meanwhile`` has not
    run)."""
    w = _get_gemm_worker()
    if w is None or not w.busy.acquire(blocking=False):
        return False
    try:
        return w.product(first, second, whole, alpha, beta, meanwhile)
    finally:
        w.busy.release()


def matmul_halves(first, second, whole, meanwhile=None) -> None:
    """``out = a @ b`` for the ``(a, b, out)`` triple ``whole``, split as ``first`` (here) and
    ``second`` (on a worker thread that calls BLAS without the GIL) at once, or whole here,
    whichever has been faster lately (:class:`_Chooser`).  The outputs of ``first`` and
    ``second`` must be disjoint parts of ``whole``'s.  Each half must be small enough for one BLAS
    thread: the caller holds BLAS to one thread (``_threads.SerialBlas``).  Falls back to
    :func:`run_halves` (a Python worker) when NumPy's OpenBLAS ``sgemm`` cannot be called
    directly, and to NumPy on the whole when a view is not BLAS-shaped or the worker is busy.
    ``meanwhile()`` (if given) runs on the caller while the worker computes its half (or before
    the product): work that neither reads the product's output nor writes its inputs."""
    w = _get_gemm_worker()
    if w is None or not w.busy.acquire(blocking=False):
        if meanwhile is not None:
            meanwhile()
        if w is None:
            run_halves(_matmul, first, second)
        else:
            _matmul(whole)
        return
    try:
        if not w.product(first, second, whole, meanwhile=meanwhile):
            if meanwhile is not None:
                meanwhile()
            _matmul(whole)
    finally:
        w.busy.release()


def _matmul(t) -> None:
    np.matmul(t[0], t[1], out=t[2])

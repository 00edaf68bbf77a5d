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
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from ._threads import available_cpus

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
    __slots__ = ("arg", "claim", "done", "error", "fn")

    def __init__(self, fn: Callable, arg) -> None:
        self.fn, self.arg, self.error = fn, arg, None
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
            job.done.release()

    def run(self, fn: Callable, mine, theirs) -> None:
        job = _Job(fn, theirs)
        self._queue.put(job)
        try:
            fn(mine)
        finally:
            if job.claim.acquire(blocking=False):
                fn(theirs)  # the worker has not started: do it here
            else:
                job.done.acquire()  # never return while the worker still writes
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
    claimed it by the time the caller's own half is done, as :class:`_Worker` does."""

    def __init__(self, sgemm) -> None:
        from .kernels import spin

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
        self._late = 0.0          # running rate of late hand-overs (see _note)
        self.serial_left = 0      # pairs still to run both on the caller (see _note)
        per_us = spin.checks_per_us()
        self._worker_checks = max(1, int(WORKER_SPIN_US * per_us))
        self._caller_checks = max(1, int(CALLER_SPIN_US * per_us))
        threading.Thread(target=self._loop, name="plite-gemm", daemon=True).start()

    def _loop(self) -> None:
        from .kernels import spin

        c, last = self._counters, 0
        while True:
            last = spin.serve_gemm(self._sgemm, c, self._desc, self._scal, last, self._worker_checks)
            with self._wake:
                self._sleeping = True
                while spin.load(c, spin.POSTED) == last:
                    self._wake.wait()
                self._sleeping = False

    def serial_now(self) -> bool:
        """True (and one pair fewer to go) while pairs are to run whole on the caller because the
        worker has been late (see :meth:`_note`)."""
        if self.serial_left > 0:
            self.serial_left -= 1
            return True
        return False

    def matmul_pair(self, mine, theirs, alpha: float = 1.0, beta: float = 0.0) -> bool:
        """``out = alpha a @ b + beta out`` for ``mine`` here and for ``theirs`` on the worker, at
        once (each an ``(a, b, out)`` triple); False, with nothing done, when a view is not
        BLAS-shaped (``theirs``, or ``mine`` when ``beta`` is not 0)."""
        from . import _blas
        from .kernels import spin

        plain = alpha == 1.0 and beta == 0.0
        if not _blas.describe(*theirs, self._desc) or not (plain or _blas.describe(*mine, self._mine)):
            return False
        self._scal[0], self._scal[1] = alpha, beta
        c = self._counters
        self._seq += 1
        seq = self._seq
        spin.publish(c, spin.POSTED, seq)
        with self._wake:
            woken = self._sleeping
            if woken:
                self._wake.notify()
        t0 = time.perf_counter()
        self._mine_here(mine, plain)
        t1 = time.perf_counter()
        late = spin.claim(c, spin.CLAIMED, seq)
        if late:
            spin.call_gemm(self._sgemm, self._desc, self._scal)  # the worker has not started: do it here
        else:
            while not spin.wait_until(c, spin.DONE, seq, self._caller_checks):
                time.sleep(50e-6)  # the worker's core is taken by another process
            late = time.perf_counter() - t1 > max(LATE_US * 1e-6, 0.5 * (t1 - t0))
        if not woken:  # a worker woken from sleep is expected to be late; one spinning is not
            self._note(late)
        return True

    def _mine_here(self, mine, plain: bool) -> None:
        from .kernels import spin

        if plain:
            np.matmul(mine[0], mine[1], out=mine[2])
        else:
            spin.call_gemm(self._sgemm, self._mine, self._scal)

    def _note(self, late: bool) -> None:
        """Keep a running rate of late hand-overs (an average over ~16); above LATE_RATE the next
        SERIAL_JOBS calls of
        :func:`matmul_halves` / :func:`gemm_halves` decline, so that the caller runs the product
        whole.  With another process on the other core the worker is descheduled for milliseconds
        at a time, and a caller waiting for a half it cannot take back made an RBM epoch 1.45x
        slower than the serial path (the two halves one after the other still 1.13x: one whole
        product beats two halves)."""
        self._late += (float(late) - self._late) / 16
        if self._late > LATE_RATE:
            self._late = 0.0
            self.serial_left = SERIAL_JOBS


#: How long the product worker keeps checking for the next job before it sleeps, and how long the
#: caller checks for the worker's half before it polls with sleeps (microseconds): longer than
#: the gaps between the RBM layer's products within and between iterations (~10-150 us), short
#: enough that a finished training run leaves no thread spinning.
WORKER_SPIN_US = 300
CALLER_SPIN_US = 2000
#: A worker is late when the caller finds its half not started after doing its own, or waits for
#: it longer than this (or than half the caller's own time, if longer).
LATE_US = 100
#: Above this running rate of late hand-overs the next SERIAL_JOBS products run whole on the
#: caller (~0.2 s of RBM training), then the worker is tried again.  With the other core busy about
#: every other hand-over is late; on an idle machine one in a few hundred.
LATE_RATE = 0.3
SERIAL_JOBS = 1000

_gemm_worker: _GemmWorker | None | bool = False  # False: not made yet; None: not available


def _get_gemm_worker() -> _GemmWorker | None:
    global _gemm_worker
    w = _gemm_worker
    if w is False or (w is not None and w.pid != os.getpid()):
        with _make_lock:
            if _gemm_worker is False or (_gemm_worker is not None and _gemm_worker.pid != os.getpid()):
                from . import _blas

                fn = _blas.sgemm()
                _gemm_worker = _GemmWorker(fn) if fn is not None else None
            w = _gemm_worker
    return w


def gemm_halves(first, second, alpha: float, beta: float) -> bool:
    """``out = alpha a @ b + beta out`` for two ``(a, b, out)`` triples at once, like
    :func:`matmul_halves`; False, with nothing done, when NumPy's ``sgemm`` cannot be called
    directly, a view is not BLAS-shaped, the worker is busy with another caller or has been late
    (the caller then does the product another way, whole)."""
    w = _get_gemm_worker()
    if w is None or not w.busy.acquire(blocking=False):
        return False
    try:
        return not w.serial_now() and w.matmul_pair(first, second, alpha, beta)
    finally:
        w.busy.release()


def matmul_halves(first, second) -> bool:
    """Two products ``out = a @ b`` at once (``first`` and ``second`` are ``(a, b, out)``
    triples; the outputs must not overlap): ``first`` here, ``second`` on a worker thread that
    calls BLAS without the GIL.  Each product must be small enough for one BLAS thread: the
    caller holds BLAS to one thread (``_threads.SerialBlas``).  Falls back to :func:`run_halves`
    (a Python worker) when NumPy's OpenBLAS ``sgemm`` cannot be called directly or ``second``'s
    views are not BLAS-shaped.  Returns False, with nothing done, when the caller should run the
    product whole: the worker is busy with another caller, or has been late (its core busy)."""
    w = _get_gemm_worker()
    if w is None:
        run_halves(_matmul, first, second)
        return True
    if not w.busy.acquire(blocking=False):
        return False
    try:
        if w.serial_now():
            return False
        if not w.matmul_pair(first, second):
            run_halves(_matmul, first, second)
        return True
    finally:
        w.busy.release()


def _matmul(t) -> None:
    np.matmul(t[0], t[1], out=t[2])

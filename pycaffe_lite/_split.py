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
from collections.abc import Callable

from ._threads import available_cpus

__all__ = ["available_cpus", "run_halves", "split_point"]


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

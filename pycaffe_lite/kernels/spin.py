"""Spin-waiting on a counter without the GIL: the fast half of the two-thread hand-over in
pycaffe_lite/_split.py.

Waking a sleeping thread costs 15-35 us on this kind of (virtual) machine, twice per hand-over
(the worker wakes for its half, the caller wakes when it is done), against halves of 50-70 us.
A thread that expects the other within microseconds instead watches a shared int64 counter in a
loop that holds no GIL, for a bounded number of checks, and goes to sleep only when that budget
runs out.  The loads and stores are atomic (acquire / release), so the compiler can neither
hoist the load out of the loop nor reorder the job's writes after the store that publishes it.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _item_pointer(context, builder, sig, args):
    """LLVM pointer to ``counters[i]`` for an intrinsic whose first two arguments are them."""
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def _load_acquire(typingctx, counters, i):
    """``counters[i]`` (int64 array) read with acquire ordering."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        return builder.load_atomic(ptr, ordering="acquire", align=8)

    return types.int64(counters, i), codegen


@intrinsic
def _store_release(typingctx, counters, i, value):
    """``counters[i] = value`` (int64 array) with release ordering."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, ptr, ordering="release", align=8)
        return context.get_dummy_value()

    return types.void(counters, i, value), codegen


@intrinsic
def _compare_exchange(typingctx, counters, i, expected, new):
    """Atomically: if ``counters[i] == expected`` set it to ``new`` and return True, else False."""
    if not (isinstance(counters, types.Array) and counters.dtype == types.int64):
        return None

    def codegen(context, builder, sig, args):
        ptr = _item_pointer(context, builder, sig, args)
        old = context.cast(builder, args[2], sig.args[2], types.int64)
        val = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(ptr, old, val, "acq_rel", "acquire")
        return builder.extract_value(pair, 1)

    return types.boolean(counters, i, expected, new), codegen


@intrinsic
def _cpu_relax(typingctx):
    """A spin-loop hint to the processor (x86 ``pause``); nothing elsewhere."""

    def codegen(context, builder, sig, args):
        import platform

        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            fnty = ir.FunctionType(ir.VoidType(), [])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, nogil=True)
def load(counters, i):
    """``counters[i]``, atomically (acquire)."""
    return _load_acquire(counters, i)


@njit(cache=True, nogil=True)
def publish(counters, i, value):
    """``counters[i] = value``, atomically (release): everything written before is visible to a
    thread that then loads the new value."""
    _store_release(counters, i, value)


@njit(cache=True, nogil=True)
def wait_while(counters, i, old, max_checks):
    """Spin while ``counters[i] == old``, at most ``max_checks`` checks; return the last value
    seen (``old`` when the budget ran out)."""
    for _ in range(max_checks):
        v = _load_acquire(counters, i)
        if v != old:
            return v
        _cpu_relax()
    return old


@njit(cache=True, nogil=True)
def wait_until(counters, i, target, max_checks):
    """Spin until ``counters[i] == target``, at most ``max_checks`` checks; True if it got there."""
    for _ in range(max_checks):
        if _load_acquire(counters, i) == target:
            return True
        _cpu_relax()
    return False


@njit(cache=True, nogil=True)
def claim(counters, i, seq):
    """Take job ``seq``: True for the one thread that moves ``counters[i]`` from ``seq - 1`` to
    ``seq``, False for everyone else."""
    return _compare_exchange(counters, i, seq - 1, seq)


#: Indexes of a worker's counters (int64, 64 bytes apart: never on one cache line).
POSTED, CLAIMED, DONE = 0, 8, 16
ROW_MAJOR = 101


@njit(cache=True, nogil=True)
def call_gemm(sgemm, desc, scal):
    """One row-major ``sgemm`` (a first-class function, pycaffe_lite/_blas.py) with the arguments
    in ``desc`` (transA, transB, M, N, K, A, lda, B, ldb, C, ldc) and ``scal`` (alpha, beta):
    C = alpha A B + beta C."""
    sgemm(np.int32(ROW_MAJOR), np.int32(desc[0]), np.int32(desc[1]), desc[2], desc[3], desc[4],
          scal[0], np.uint64(desc[5]), desc[6], np.uint64(desc[7]), desc[8],
          scal[1], np.uint64(desc[9]), desc[10])


@njit(cache=True, nogil=True)
def serve_gemm(sgemm, counters, desc, scal, last, max_checks):
    """A worker thread's loop, without the GIL: wait for ``counters[POSTED]`` to pass ``last``,
    take the job (:func:`claim` on CLAIMED, unless the poster took it back), run the product
    described by ``desc`` and ``scal`` (:func:`call_gemm`) and set DONE to its number; return the last job number seen once
    ``max_checks`` checks pass with no new job (the thread then sleeps in Python)."""
    while True:
        seq = wait_while(counters, POSTED, last, max_checks)
        if seq == last:
            return last
        last = seq
        if claim(counters, CLAIMED, seq):
            call_gemm(sgemm, desc, scal)
            publish(counters, DONE, seq)


def checks_per_us() -> float:
    """How many :func:`wait_while` checks take a microsecond here (timed on an unchanging
    counter; the fastest of three tries)."""
    import time

    c = np.zeros(1, np.int64)
    wait_while(c, 0, 0, 10)  # compile / load
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        wait_while(c, 0, 0, 20000)
        best = min(best, time.perf_counter() - t0)
    return 20000 / max(best * 1e6, 1e-3)

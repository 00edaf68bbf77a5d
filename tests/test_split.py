"""pycaffe_lite._split: two halves of a job on the caller and a persistent worker thread."""
import threading

import numpy as np
import pytest

from pycaffe_lite import _split


@pytest.mark.parametrize("n,cut", [(0, 0), (1, 1), (2, 1), (20, 16), (37, 16), (500, 256), (784, 384), (800, 400)])
def test_split_point(n, cut):
    assert _split.split_point(n) == cut


def test_available_cpus_is_at_least_one():
    assert _split.available_cpus() >= 1


def test_run_halves_runs_each_half_once_on_two_threads():
    seen, started = [], threading.Event()

    def fn(half):
        if half == "a":
            assert started.wait(10)  # the caller's half waits until the worker runs the other
        else:
            started.set()
        seen.append((half, threading.get_ident()))

    _split.run_halves(fn, "a", "b")
    assert sorted(h for h, _ in seen) == ["a", "b"]
    assert dict(seen)["a"] == threading.get_ident() != dict(seen)["b"]  # the caller runs the first


def test_the_caller_takes_back_a_half_the_worker_has_not_started():
    """A worker that cannot start (here: stuck in an earlier job; in life: its core busy) does not
    hold the caller up: the caller runs both halves and returns."""
    worker, release = _split._Worker(), threading.Event()
    stuck = _split._Job(lambda _: release.wait(10), None)
    worker._queue.put(stuck)
    seen = []
    try:
        worker.run(lambda half: seen.append((half, threading.get_ident())), "a", "b")
        assert seen == [("a", threading.get_ident()), ("b", threading.get_ident())]
    finally:
        release.set()
    assert stuck.done.acquire(timeout=10)  # the worker finishes its job and skips the taken one


def test_halves_overlap_and_write_their_own_parts():
    """Each half releases the GIL inside NumPy; the output equals the one-thread product."""
    rs = np.random.default_rng(0)
    a, b = rs.random((30, 64), dtype=np.float32), rs.random((64, 48), dtype=np.float32)
    out = np.zeros((30, 48), np.float32)
    for _ in range(20):
        _split.run_halves(lambda j: np.matmul(a, b[:, j], out=out[:, j]), slice(0, 16), slice(16, 48))
    np.testing.assert_allclose(out, a @ b, rtol=1e-5)


@pytest.mark.parametrize("failing", ["caller", "worker"])
def test_an_exception_in_either_half_reaches_the_caller(failing):
    done = []

    def fn(half):
        if half == failing:
            raise ValueError(f"half {half} failed")
        done.append(half)

    with pytest.raises(ValueError, match=f"half {failing} failed"):
        _split.run_halves(fn, "caller", "worker")
    assert done == [h for h in ("caller", "worker") if h != failing]  # the other half still ran
    _split.run_halves(done.append, 1, 2)  # and the worker is still usable
    assert sorted(done[-2:]) == [1, 2]


def test_a_busy_worker_makes_the_caller_run_both_halves():
    """Re-entry (a half that splits again) or another thread using the worker: no deadlock."""
    seen = []

    def outer(half):
        _split.run_halves(lambda h: seen.append((half, h, threading.get_ident())), 1, 2)

    _split.run_halves(outer, "a", "b")
    assert sorted((o, i) for o, i, _ in seen) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    for o in "ab":  # whoever ran an outer half ran both of its inner halves
        assert len({t for oo, _, t in seen if oo == o}) == 1


# ------------------------------------------------------------------ the GIL-free product worker
@pytest.fixture(autouse=True)
def _worker_on_time():
    """Each test starts with a worker that has not been late (see _GemmWorker._note)."""
    w = _split._get_gemm_worker()
    if w is not None:
        w.serial_left, w._late = 0, 0.0


def _views(rs):
    """(a, b, out) triples of every layout the RBM layer hands over: plain, transposed operands,
    row blocks and column slices of larger buffers."""
    W = rs.random((37, 45), dtype=np.float32)
    x = rs.random((7, 45), dtype=np.float32)
    h = rs.random((37, 7), dtype=np.float32)
    AT = np.zeros((37, 14), np.float32)
    Q = np.zeros((14, 45), np.float32)
    return [
        ((W[:16], x.T, AT[:16, :7]), (W[16:], x.T, AT[16:, :7])),          # rows, transposed b
        ((h.T, W[:, :16], Q[7:, :16]), (h.T, W[:, 16:], Q[7:, 16:])),     # columns, transposed a
        ((W[:16], Q[7:].T, AT[:16, 7:]), (W[16:], Q[7:].T, AT[16:, 7:])),
    ]


def test_gemm_worker_is_available_here():
    """NumPy's wheels bundle OpenBLAS with the ILP64 C interface the worker calls; without it
    the split falls back to the Python worker (slower: ~0.61 instead of ~0.48 of scikit-learn's
    RBM epoch)."""
    assert _split._get_gemm_worker() is not None, "NumPy's OpenBLAS cblas_sgemm was not found"


def test_matmul_halves_equal_numpy_and_run_on_the_worker():
    rs = np.random.default_rng(0)
    w = _split._get_gemm_worker()
    done_before = int(w._counters[16])
    for _ in range(30):
        for first, second in _views(rs):
            _split.matmul_halves(first, second)
            for a, b, out in (first, second):
                np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)
    assert int(w._counters[16]) > done_before  # DONE moved: the worker ran some halves


def test_gemm_halves_accumulate():
    rs = np.random.default_rng(1)
    for first, second in _views(rs):
        start = [rs.random(t[2].shape, dtype=np.float32) for t in (first, second)]
        for t, s in zip((first, second), start):
            t[2][...] = s
        assert _split.gemm_halves(first, second, 0.25, 1.0)
        for (a, b, out), s in zip((first, second), start):
            np.testing.assert_allclose(out, s + 0.25 * (a @ b), rtol=1e-5, atol=1e-6)


def test_gemm_halves_refuse_views_blas_cannot_take():
    a = np.ones((4, 6), np.float32)
    b = np.ones((12, 5), np.float32)[::2]  # every other row: still BLAS-shaped (leading dimension 10)
    out = np.zeros((4, 5), np.float32)
    bad = np.ones((6, 10), np.float32)[:, ::2]  # columns two floats apart: BLAS cannot take it
    assert not _split.gemm_halves((a, bad, out), (a, bad, out.copy()), 1.0, 1.0)
    assert not (out != 0).any()  # nothing was done
    assert _split.gemm_halves((a, b, out), (a, b[:, :5], np.zeros((4, 5), np.float32)), 1.0, 0.0)
    np.testing.assert_allclose(out, a @ b)
    f64 = np.ones((4, 6))
    assert not _split.gemm_halves((f64, b, out), (f64, b, out), 1.0, 1.0)


def test_matmul_halves_fall_back_for_views_blas_cannot_take():
    rs = np.random.default_rng(2)
    a = rs.random((4, 6), dtype=np.float32)
    b = rs.random((6, 10), dtype=np.float32)
    out = np.zeros((4, 10), np.float32)
    _split.matmul_halves((a, b[:, 0::2], out[:, 0::2]), (a, b[:, 1::2], out[:, 1::2]))  # strided halves
    np.testing.assert_allclose(out, a @ b, rtol=1e-6)


def test_the_caller_runs_a_product_the_worker_has_not_claimed(monkeypatch):
    """A worker that never starts (here: its thread never runs; in life: its core busy): the
    caller claims the job after its own half, runs it, and returns at once."""
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self))
    w = _split._GemmWorker(_split._get_gemm_worker()._sgemm)
    assert len(started) == 1  # the worker's thread was made but not started
    rs = np.random.default_rng(3)
    for first, second in _views(rs):
        assert w.matmul_pair(first, second)
        for a, b, out in (first, second):
            np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)


def test_the_worker_sleeps_when_idle_and_wakes_for_the_next_product():
    import time

    w = _split._get_gemm_worker()
    rs = np.random.default_rng(4)
    first, second = _views(rs)[0]
    _split.matmul_halves(first, second)
    deadline = time.monotonic() + 10
    while not w._sleeping and time.monotonic() < deadline:  # past its spin budget it sleeps
        time.sleep(0.01)
    assert w._sleeping
    cpu = time.process_time()
    time.sleep(0.2)
    assert time.process_time() - cpu < 0.1  # asleep: no core spent
    _split.matmul_halves(first, second)
    for a, b, out in (first, second):
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)


def test_a_forked_child_makes_its_own_product_worker():
    import multiprocessing as mp

    _split._get_gemm_worker()  # the parent has one
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_products, args=(q,))
    p.start()
    result = q.get(timeout=60)
    p.join(60)
    assert result == "ok", result


def _child_products(q):
    try:
        rs = np.random.default_rng(5)
        for first, second in _views(rs):
            _split.matmul_halves(first, second)
            for a, b, out in (first, second):
                np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)
        w = _split._get_gemm_worker()
        q.put("ok" if w.pid == __import__("os").getpid() else "the child used the parent's worker")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put(repr(e))


def test_a_late_worker_makes_the_caller_run_products_whole(monkeypatch):
    """Late hand-overs at a sustained rate (the other core busy): the next SERIAL_JOBS calls
    decline, so the caller runs each product whole, then the worker is tried again.  Sporadic
    lateness (an idle machine's hiccups) does not."""
    monkeypatch.setattr(_split, "SERIAL_JOBS", 3)
    w = _split._get_gemm_worker()
    monkeypatch.setattr(w, "serial_left", 0)
    monkeypatch.setattr(w, "_late", 0.0)
    for late in ([True] + [False] * 7) * 20 + [True] * 3:  # 1 in 8, then 3 in a row
        w._note(late)
        assert w.serial_left == 0
    for late in (False, True, False, True):  # every other one late
        w._note(late)
    assert w.serial_left == 3
    first, second = _views(np.random.default_rng(6))[0]
    assert [_split.matmul_halves(first, second) for _ in range(3)] == [False, False, False]
    assert not first[2].any() and not second[2].any()  # declined calls do nothing
    assert _split.matmul_halves(first, second)  # then the worker again
    for a, b, out in (first, second):
        np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)
    w.serial_left = 3
    assert not _split.gemm_halves(first, second, 1.0, 1.0) and w.serial_left == 2

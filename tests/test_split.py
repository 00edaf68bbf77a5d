"""pycaffe_lite._split: two halves of a job on the caller and a persistent worker thread."""
import threading
import time

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
def _always_split(monkeypatch):
    """The GIL-free worker's chooser (split or whole, by measurement) is tested on its own; the
    other tests split every product."""
    w = _split._get_gemm_worker()
    if w is not None:
        monkeypatch.setattr(w.chooser, "whole_now", lambda: False)


def _views(rs):
    """(first, second, whole) triples of (a, b, out) in every layout the RBM layer hands over:
    transposed operands, row blocks and column slices of larger buffers."""
    W = rs.random((37, 45), dtype=np.float32)
    x = rs.random((7, 45), dtype=np.float32)
    h = rs.random((37, 7), dtype=np.float32)
    AT = np.zeros((37, 14), np.float32)
    Q = np.zeros((14, 45), np.float32)
    return [
        ((W[:16], x.T, AT[:16, :7]), (W[16:], x.T, AT[16:, :7]), (W, x.T, AT[:, :7])),      # rows
        ((h.T, W[:, :16], Q[7:, :16]), (h.T, W[:, 16:], Q[7:, 16:]), (h.T, W, Q[7:])),     # columns
        ((W[:16], Q[7:].T, AT[:16, 7:]), (W[16:], Q[7:].T, AT[16:, 7:]), (W, Q[7:].T, AT[:, 7:])),
    ]


def test_gemm_worker_is_available_here():
    """NumPy's wheels bundle OpenBLAS with the ILP64 C interface the worker calls; without it
    the split falls back to the Python worker (slower: ~0.61 instead of ~0.48 of scikit-learn's
    RBM epoch)."""
    assert _split._get_gemm_worker() is not None, "NumPy's OpenBLAS cblas_sgemm was not found"


def test_matmul_halves_equal_numpy_and_run_on_the_worker():
    import time

    rs = np.random.default_rng(0)
    w = _split._get_gemm_worker()
    done_before = int(w._counters[16])
    deadline = time.monotonic() + 30
    rounds = 0
    # on a loaded machine the caller may take back every half for a while: keep going until the
    # worker has run one (DONE moved), or 30 s
    while rounds < 30 or (int(w._counters[16]) == done_before and time.monotonic() < deadline):
        rounds += 1
        for first, second, whole in _views(rs):
            _split.matmul_halves(first, second, whole)
            np.testing.assert_allclose(whole[2], whole[0] @ whole[1], rtol=1e-5, atol=1e-6)
    assert int(w._counters[16]) > done_before  # DONE moved: the worker ran some halves


@pytest.mark.parametrize("split", [True, False])
def test_gemm_halves_accumulate(split, monkeypatch):
    monkeypatch.setattr(_split._get_gemm_worker().chooser, "whole_now", lambda: not split)
    rs = np.random.default_rng(1)
    for first, second, whole in _views(rs):
        start = rs.random(whole[2].shape, dtype=np.float32)
        whole[2][...] = start
        assert _split.gemm_halves(first, second, whole, 0.25, 1.0)
        np.testing.assert_allclose(whole[2], start + 0.25 * (whole[0] @ whole[1]), rtol=1e-5, atol=1e-6)


def test_gemm_halves_refuse_views_blas_cannot_take():
    a = np.ones((4, 6), np.float32)
    bad = np.ones((6, 20), np.float32)[:, ::2]  # columns two floats apart: BLAS cannot take it
    out = np.zeros((4, 10), np.float32)
    halves = (a, bad[:, :5], out[:, :5]), (a, bad[:, 5:], out[:, 5:])
    assert not _split.gemm_halves(*halves, (a, bad, out), 1.0, 1.0)
    assert not out.any()  # nothing was done
    f64 = np.ones((4, 6))
    b = np.ones((6, 10), np.float32)
    assert not _split.gemm_halves((f64, b[:, :5], out[:, :5]), (f64, b[:, 5:], out[:, 5:]), (f64, b, out), 1.0, 1.0)
    b2 = np.ones((12, 10), np.float32)[::2]  # every other row: still BLAS-shaped (leading dimension 20)
    assert _split.gemm_halves((a, b2[:, :5], out[:, :5]), (a, b2[:, 5:], out[:, 5:]), (a, b2, out), 1.0, 0.0)
    np.testing.assert_allclose(out, a @ b2)


def test_matmul_halves_fall_back_for_views_blas_cannot_take():
    rs = np.random.default_rng(2)
    a = rs.random((4, 6), dtype=np.float32)
    b = rs.random((6, 10), dtype=np.float32)
    out = np.zeros((4, 10), np.float32)
    _split.matmul_halves((a, b[:, 0::2], out[:, 0::2]), (a, b[:, 1::2], out[:, 1::2]), (a, b, out))
    np.testing.assert_allclose(out, a @ b, rtol=1e-6)


def test_the_caller_runs_a_product_the_worker_has_not_claimed(monkeypatch):
    """A worker that never starts (here: its thread never runs; in life: its core busy): the
    caller claims the job after its own half, runs it, and returns at once."""
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self))
    w = _split._GemmWorker(_split._get_gemm_worker()._sgemm)
    assert len(started) == 1  # the worker's thread was made but not started
    monkeypatch.setattr(w.chooser, "whole_now", lambda: False)
    rs = np.random.default_rng(3)
    for first, second, whole in _views(rs):
        assert w.product(first, second, whole)
        np.testing.assert_allclose(whole[2], whole[0] @ whole[1], rtol=1e-5, atol=1e-6)
    assert w._seq == 3 and w._counters[8] == 3  # three jobs posted, all claimed back by the caller


def test_the_worker_sleeps_when_idle_and_wakes_for_the_next_product():
    import time

    w = _split._get_gemm_worker()
    rs = np.random.default_rng(4)
    first, second, whole = _views(rs)[0]
    _split.matmul_halves(first, second, whole)
    deadline = time.monotonic() + 10
    while not w._sleeping and time.monotonic() < deadline:  # past its spin budget it sleeps
        time.sleep(0.01)
    assert w._sleeping
    cpu = time.process_time()
    time.sleep(0.2)
    assert time.process_time() - cpu < 0.1  # asleep: no core spent
    whole[2][...] = 0
    _split.matmul_halves(first, second, whole)
    np.testing.assert_allclose(whole[2], whole[0] @ whole[1], rtol=1e-5, atol=1e-6)


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
        for first, second, whole in _views(rs):
            _split.matmul_halves(first, second, whole)
            np.testing.assert_allclose(whole[2], whole[0] @ whole[1], rtol=1e-5, atol=1e-6)
        w = _split._get_gemm_worker()
        q.put("ok" if w.pid == __import__("os").getpid() else "the child used the parent's worker")
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put(repr(e))


def test_the_chooser_keeps_the_way_that_made_the_loop_faster(monkeypatch):
    """Of every CYCLE products the first PROBE run the other way; the faster window wins."""
    monkeypatch.setattr(_split, "CYCLE", 8)
    monkeypatch.setattr(_split, "PROBE", 2)
    clock = [0.0]
    monkeypatch.setattr(_split.time, "perf_counter", lambda: clock[0])
    cost = {False: 1.0, True: 2.0}  # whole -> seconds per product (and what follows it)
    ch = _split._Chooser()
    ways = []
    for _ in range(40):
        whole = ch.whole_now()
        ways.append(whole)
        clock[0] += cost[whole]
    assert ways[:8] == [True, True] + [False] * 6  # probes, then the current way (split)
    assert not ch.whole and ways.count(True) == 10  # splitting stayed faster: only the probes ran whole
    cost = {False: 3.0, True: 2.0}  # now whole products are faster (the other core got busy)
    for _ in range(16):
        clock[0] += cost[ch.whole_now()]
    assert ch.whole
    clock[0] += 1000.0  # something else ran for a long time inside a window: that one is ignored
    for _ in range(8):
        clock[0] += cost[ch.whole_now()]
    assert ch.whole


@pytest.mark.parametrize("whole_now", [True, False])
def test_the_product_equals_numpy_whichever_way_it_runs(whole_now, monkeypatch):
    w = _split._get_gemm_worker()
    monkeypatch.setattr(w.chooser, "whole_now", lambda: whole_now)
    seq = w._seq
    for first, second, whole in _views(np.random.default_rng(6)):
        _split.matmul_halves(first, second, whole)
        np.testing.assert_allclose(whole[2], whole[0] @ whole[1], rtol=1e-5, atol=1e-6)
    assert (w._seq == seq) == whole_now  # whole: nothing posted to the worker


@pytest.mark.parametrize("whole_now", [True, False])
def test_meanwhile_runs_once_and_its_error_waits_for_the_worker(whole_now, monkeypatch):
    """``meanwhile`` runs on the caller while the worker computes its half (or before a whole
    product); if it raises, the call still returns only after the worker has finished writing."""
    w = _split._get_gemm_worker()
    monkeypatch.setattr(w.chooser, "whole_now", lambda: whole_now)
    first, second, whole = _views(np.random.default_rng(7))[0]
    ran = []
    _split.matmul_halves(first, second, whole, lambda: ran.append(1))
    assert ran == [1]
    np.testing.assert_allclose(whole[2], whole[0] @ whole[1], rtol=1e-5, atol=1e-6)

    def fail():
        raise ValueError("bad input")

    whole[2][...] = 0
    with pytest.raises(ValueError, match="bad input"):
        _split.matmul_halves(first, second, whole, fail)
    if not whole_now:  # the posted half was finished (by the worker or, unclaimed, here) before the error
        np.testing.assert_allclose(second[2], second[0] @ second[1], rtol=1e-5, atol=1e-6)
        assert w._counters[8] == w._seq  # claimed
    else:
        assert not whole[2].any()  # meanwhile runs first: nothing was computed
    assert not w.busy.locked()  # and the worker is free for the next caller
    ran.clear()
    assert _split.gemm_halves(first, second, whole, 1.0, 0.0, lambda: ran.append(2)) and ran == [2]


def test_the_caller_watches_the_worker_finish_its_numbered_job():
    worker = _split._Worker()
    assert worker._join_checks > 0  # with the JIT on, the caller spins before it sleeps
    out = np.zeros(2)
    for k in range(1, 4):
        def fn(i, k=k):
            time.sleep(0.002)  # both halves long enough for the worker to take its own
            out[i] = k

        worker.run(fn, 0, 1)
        assert list(out) == [k, k] and worker._seq == k
        if worker._finished[0]:  # the worker ran a half: its number is published before done
            assert worker._finished[0] <= k

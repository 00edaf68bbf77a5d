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

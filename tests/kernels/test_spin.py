"""kernels/spin.py: atomic counters, bounded spins, and the worker's product loop."""
import threading

import numpy as np

from pycaffe_lite import _blas
from pycaffe_lite.kernels import spin


def test_publish_load_and_claim():
    c = np.zeros(24, np.int64)
    spin.publish(c, spin.POSTED, 5)
    assert spin.load(c, spin.POSTED) == 5 and c[spin.POSTED] == 5
    assert spin.claim(c, spin.CLAIMED, 1)        # 0 -> 1
    assert not spin.claim(c, spin.CLAIMED, 1)    # taken: nobody else gets it
    assert not spin.claim(c, spin.CLAIMED, 3)    # not the next one
    assert spin.claim(c, spin.CLAIMED, 2) and c[spin.CLAIMED] == 2


def test_bounded_waits():
    c = np.zeros(24, np.int64)
    assert spin.wait_while(c, 0, 0, 1000) == 0   # budget spent, nothing changed
    c[0] = 7
    assert spin.wait_while(c, 0, 0, 1000) == 7
    assert spin.wait_until(c, 0, 7, 10)
    assert not spin.wait_until(c, 0, 8, 1000)
    assert spin.checks_per_us() > 0


def test_a_wait_sees_a_value_another_thread_publishes():
    c = np.zeros(24, np.int64)
    t = threading.Timer(0.05, lambda: spin.publish(c, spin.DONE, 3))
    t.start()
    got = 0
    for _ in range(1000):  # each wait releases the GIL, so the timer thread can run
        got = spin.wait_while(c, spin.DONE, 0, 100000)
        if got:
            break
    t.join()
    assert got == 3


def test_serve_gemm_runs_posted_products_and_returns_when_idle():
    sgemm = _blas.sgemm()
    assert sgemm is not None
    rs = np.random.default_rng(0)
    a, b = rs.random((5, 8), dtype=np.float32), rs.random((8, 6), dtype=np.float32)
    out = np.zeros((5, 6), np.float32)
    c, desc = np.zeros(24, np.int64), np.zeros(16, np.int64)
    scal = np.array([1.0, 0.0], np.float32)
    assert _blas.describe(a, b, out, desc)
    results = []
    worker = threading.Thread(target=lambda: results.append(
        spin.serve_gemm(sgemm, c, desc, scal, 0, 50_000_000)))
    worker.start()
    spin.publish(c, spin.POSTED, 1)
    assert spin.wait_until(c, spin.DONE, 1, 500_000_000)
    worker.join(30)
    assert results == [1]  # it served job 1, then returned once its budget ran out
    np.testing.assert_allclose(out, a @ b, rtol=1e-6)
    # a job the poster took back first is skipped: DONE stays
    assert spin.claim(c, spin.CLAIMED, 2)
    spin.publish(c, spin.POSTED, 2)
    assert spin.serve_gemm(sgemm, c, desc, scal, 1, 1000) == 2 and c[spin.DONE] == 1


def test_describe_layouts():
    desc = np.zeros(16, np.int64)
    a = np.zeros((6, 10), np.float32)
    assert _blas.describe(a[:, :4], np.zeros((4, 3), np.float32), np.zeros((6, 3), np.float32), desc)
    assert tuple(desc[:5]) == (_blas.NO_TRANS, _blas.NO_TRANS, 6, 3, 4) and desc[6] == 10  # lda: the row stride
    assert _blas.describe(a.T[:4], np.zeros((6, 3), np.float32), np.zeros((4, 3), np.float32), desc)
    assert desc[0] == _blas.TRANS and desc[6] == 10
    assert not _blas.describe(a[:, ::2], np.zeros((5, 3), np.float32), np.zeros((6, 3), np.float32), desc)
    assert not _blas.describe(a, np.zeros((9, 3), np.float32), np.zeros((6, 3), np.float32), desc)  # K differs
    assert not _blas.describe(a[:0], np.zeros((10, 3), np.float32), np.zeros((0, 3), np.float32), desc)

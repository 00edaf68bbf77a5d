"""The recurrent layers' time loops split over two threads (half of the streams each): the same
numbers as one loop (up to float32 rounding), gradients through time, the gradnorm record, the
fall-back to one loop, and errors from the worker thread."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pycaffe_lite.layers.recurrent as R
from pycaffe_lite.rng import set_random_seed
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, setup_layer
from .test_recurrent import build, randomize_peepholes, recurrent

GRADIENT_CHECKED = {"RNN", "LSTM", "GRU"}


@pytest.fixture
def split(monkeypatch):
    """Split every batch of two or more streams, whatever the machine and threadpoolctl."""
    monkeypatch.setattr(R, "SPLIT_MIN_N", 2)
    monkeypatch.setattr(R, "_CPUS", 2)
    monkeypatch.setattr(R, "_blas_can_be_serial", lambda: True)


CASES = [
    ("RNN", "", False),
    ("RNN", "nonlinearity: SIGMOID expose_hidden: true", True),
    ("LSTM", "", False),
    ("LSTM", "peephole: true expose_hidden: true", True),
    ("GRU", "", True),
    ("GRU", "expose_hidden: true", False),
]
T, N, I, H, S = 5, 7, 3, 4, 2
ROOT = Path(__file__).resolve().parents[2]


def run(type_, extra, static, record=False):
    """Forward + backward twice (the carried state moves on) on 7 streams, cont resetting some
    mid-sequence; every output, diff and state as float64 arrays."""
    exposed = "expose_hidden" in extra
    rs = np.random.default_rng(1)
    cont = (rs.uniform(0, 1, (T, N)) > 0.3).astype(np.float32)
    bottoms = [rs.uniform(-1, 1, (T, N, I)).astype(np.float32), cont]
    if static:
        bottoms.append(rs.uniform(-1, 1, (N, S)).astype(np.float32))
    num_states = 2 if type_ == "LSTM" else 1
    if exposed:
        bottoms += [rs.uniform(-1, 1, (1, N, H)).astype(np.float32) for _ in range(num_states)]
    set_random_seed(3)  # the weight fillers
    layer, bottom, top = setup_layer(recurrent(type_, extra, num_output=H), bottoms,
                                     num_top=1 + (num_states if exposed else 0), seed=2)
    if "peephole" in extra:
        randomize_peepholes(layer)
    hidden = np.zeros((T, N, H), np.float32)
    if record:
        layer.record_hidden_diff = hidden
    out = []
    for _ in range(2):
        forward(layer, bottom, top)
        backward(layer, bottom, top, propagate_down=[True] * len(bottom))
        out += [b.data.copy() for b in top] + [b.diff.copy() for b in bottom if b is not bottom[1]]
    out += [b.diff.copy() for b in layer.blobs] + [s.copy() for s in layer.get_state()] + [hidden.copy()]
    return out


@pytest.mark.parametrize("type_,extra,static", CASES)
def test_two_threads_give_one_loops_numbers(type_, extra, static, monkeypatch):
    one = run(type_, extra, static, record=True)
    monkeypatch.setattr(R, "SPLIT_MIN_N", 2)
    monkeypatch.setattr(R, "_CPUS", 2)
    monkeypatch.setattr(R, "_blas_can_be_serial", lambda: True)
    assert len(R._row_parts(N)) == 2
    two = run(type_, extra, static, record=True)
    assert len(one) == len(two)
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
    assert np.any(one[-1] != 0)  # the gradnorm record was written
    for a, b in zip(two, run(type_, extra, static, record=True)):  # repeatable bit for bit
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("type_,extra,static", [
    ("RNN", "expose_hidden: true", True),
    ("LSTM", "peephole: true expose_hidden: true", True),
    ("GRU", "expose_hidden: true", False),
])
def test_gradient_through_time_on_two_threads(type_, extra, static, split):
    layer, bottom, top = build(type_, extra, static)  # N = 2: one stream per thread
    assert len(R._row_parts(2)) == 2
    if "peephole" in extra:
        randomize_peepholes(layer)
    check = [i for i in range(len(bottom)) if i != 1]
    check_gradient(layer, bottom, top, check_bottom=check, setup=False)


def test_row_parts_fall_back_to_one_loop(monkeypatch):
    monkeypatch.setattr(R, "_blas_can_be_serial", lambda: True)
    monkeypatch.setattr(R, "_CPUS", 2)
    assert R._row_parts(64) == ((0, 32), (32, 64))
    assert R._row_parts(17) == ((0, 8), (8, 17))
    assert R._row_parts(R.SPLIT_MIN_N - 1) == ((0, R.SPLIT_MIN_N - 1),)
    monkeypatch.setattr(R, "_CPUS", 1)
    assert R._row_parts(64) == ((0, 64),)
    monkeypatch.setattr(R, "_CPUS", 2)
    monkeypatch.setattr(R, "_blas_can_be_serial", lambda: False)  # no threadpoolctl
    assert R._row_parts(64) == ((0, 64),)


def test_an_error_on_the_worker_thread_reaches_the_caller(split):
    seen = []

    def rows(k, lo, hi):
        seen.append((k, lo, hi))
        if k == 1:
            raise ValueError(f"part {k} rows {lo}:{hi} failed")

    with pytest.raises(ValueError, match="part 1 rows 2:4 failed"):
        R._run_parts(rows, 4)
    assert sorted(seen) == [(0, 0, 2), (1, 2, 4)]


def test_the_worker_thread_does_not_keep_the_process_alive(tmp_path):
    """A script whose layer ran on two threads exits by itself (and a forked child gets its own
    worker: the parent's thread does not exist there)."""
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import numpy as np\n"
        "import pycaffe_lite.layers.recurrent as R\n"
        "R.SPLIT_MIN_N, R._CPUS, R._blas_can_be_serial = 2, 2, lambda: True\n"
        "seen = []\n"
        "rows = lambda k, lo, hi: seen.append((k, lo, hi, os.getpid()))\n"
        "assert R._run_parts(rows, 4) == 2\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    seen.clear()\n"
        "    R._run_parts(rows, 4)\n"
        "    os._exit(0 if sorted(s[:3] for s in seen) == [(0, 0, 2), (1, 2, 4)] else 3)\n"
        "assert os.waitpid(pid, 0)[1] == 0\n"
        "print('done', R._POOL is not None)\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "done True"

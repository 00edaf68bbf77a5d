"""Convolution with the batch split over two threads (``SPLIT_BATCH``): the same numbers as one
thread, and the one-thread path wherever two threads must not be used."""
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from pycaffe_lite import _split
from pycaffe_lite._threads import BusyMachineGuard
from pycaffe_lite.blob import Blob
from pycaffe_lite.layers import convolution
from pycaffe_lite.testing import check_gradient
from tests.conftest import ROOT
from tests.layers.test_convolution import blob, make, reference

GRADIENT_CHECKED = {"Convolution"}

FILLERS = " weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' } }"

# (convolution_param, bottom shape, NHWC_MIN_RUN): groups, stride, pad, dilation, both inner paths
CASES = [
    pytest.param("convolution_param { num_output: 4 kernel_size: 3 }", (5, 3, 6, 5), 1, id="rows"),
    pytest.param("convolution_param { num_output: 4 kernel_size: 3 }", (5, 3, 6, 5), 1 << 30, id="columns"),
    pytest.param("convolution_param { num_output: 5 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 }", (7, 6, 7, 5), 1,
                 id="rows-stride-pad"),
    pytest.param("convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad_h: 2 pad_w: 1 stride_h: 1 "
                 "stride_w: 2 group: 2 }", (4, 4, 7, 8), 1, id="columns-groups-dilation"),
    pytest.param("convolution_param { num_output: 3 kernel_size: 2 dilation: 2 pad: 1 }", (2, 5, 6, 6), 1,
                 id="rows-dilation-two-images"),
    pytest.param("convolution_param { num_output: 2 kernel_size: 1 bias_term: false }", (3, 2, 1, 1), 1 << 30,
                 id="columns-1x1"),
]


def _run(text, shape, min_run, split: bool, monkeypatch, chunk: int | None = None, bottoms: int = 1):
    """Forward and backward of a fresh layer (fixed weights and diffs); the tops, bottom diffs and
    parameter diffs."""
    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", min_run)
    monkeypatch.setattr(convolution, "_split_at", (lambda N: (N + 1) // 2 if N > 1 else 0) if split else (lambda N: 0))
    if chunk is not None:
        monkeypatch.setattr(convolution, "CHUNK_BYTES", chunk)
    layer = make(text.replace("}", FILLERS, 1) if "}" in text else text)
    xs, tops = [blob(shape, seed=s) for s in range(bottoms)], [Blob() for _ in range(bottoms)]
    layer.set_up(xs, tops)
    rng = np.random.default_rng(5)
    for b in layer.blobs:
        b.data[...] = rng.normal(size=b.shape)
        b.diff[...] = 0.25  # backward accumulates into the parameter diffs
    layer.run_forward(xs, tops)
    for t in tops:
        t.diff[...] = rng.normal(size=t.shape)
    layer.run_backward(tops, [True] * bottoms, xs)
    return layer, [t.data.copy() for t in tops] + [x.diff.copy() for x in xs] + [b.diff.copy() for b in layer.blobs]


@pytest.mark.parametrize("chunk", [None, 1], ids=["whole-halves", "image-chunks"])
@pytest.mark.parametrize("text,shape,min_run", CASES)
def test_split_equals_one_thread(monkeypatch, text, shape, min_run, chunk):
    _, serial = _run(text, shape, min_run, False, monkeypatch, chunk)
    layer, split = _run(text, shape, min_run, True, monkeypatch, chunk)
    assert layer.nhwc is (min_run == 1 and layer.group == 1)
    for a, b in zip(split, serial):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    assert not np.allclose(split[-1], 0.25)  # the parameter gradients did arrive


def test_split_forward_matches_the_float64_reference(monkeypatch):
    text, shape = "convolution_param { num_output: 5 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 }", (7, 6, 7, 5)
    layer, out = _run(text, shape, 1, True, monkeypatch, chunk=1)
    ref = reference(blob(shape).data, layer.blobs[0].data.astype(np.float64), layer.blobs[1].data,
                    (2, 2), (1, 1), (1, 1), 1)
    np.testing.assert_allclose(out[0], ref, rtol=1e-4, atol=1e-4)


def test_split_with_two_bottoms_and_a_connection_table(monkeypatch):
    pairs = [(0, 0), (1, 0), (2, 1), (0, 2), (2, 2), (1, 3)]
    table = " ".join(f"connection: {i} connection: {o}" for i, o in pairs)
    text = "convolution_param { num_output: 4 kernel_size: 3 pad: 1 " + table + " }"
    for min_run in (1, 1 << 30):
        _, serial = _run(text, (5, 3, 5, 6), min_run, False, monkeypatch, chunk=1, bottoms=2)
        layer, split = _run(text, (5, 3, 5, 6), min_run, True, monkeypatch, chunk=1, bottoms=2)
        for a, b in zip(split, serial):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
        w_diff = split[4] - 0.25
        assert np.all(w_diff[~layer.connection_mask] == 0)  # unlisted filters never move


def test_result_does_not_depend_on_which_thread_ran_the_second_half(monkeypatch):
    """With the worker busy, run_halves runs both halves here: bit for bit the same numbers."""
    text, shape = "convolution_param { num_output: 4 kernel_size: 3 stride: 2 }", (6, 8, 9, 9)
    _, on_two = _run(text, shape, 1, True, monkeypatch, chunk=1)
    worker = _split._get_worker()
    assert worker.busy.acquire(timeout=10)
    try:
        _, on_one = _run(text, shape, 1, True, monkeypatch, chunk=1)
    finally:
        worker.busy.release()
    for a, b in zip(on_two, on_one):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("min_run", [1, 1 << 30], ids=["rows", "columns"])
def test_split_gradient(monkeypatch, min_run):
    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", min_run)
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    monkeypatch.setattr(convolution, "_split_at", lambda N: (N + 1) // 2)
    layer = make(("convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 dilation: 1 }").replace("}", FILLERS))
    x, top = blob((3, 4, 5, 5), 3), Blob()
    assert check_gradient(layer, [x], [top]) > 0


def test_split_errors_reach_the_caller(monkeypatch):
    """An error in the worker's half is raised here, after both halves have stopped writing."""
    monkeypatch.setattr(convolution, "_split_at", lambda N: (N + 1) // 2)
    layer = make("convolution_param { num_output: 2 kernel_size: 1 }".replace("}", FILLERS))
    x, top = blob((4, 2, 3, 3)), Blob()
    layer.set_up([x], [top])

    def broken(W2, x, y, part):
        if part[0] > 0:
            raise RuntimeError(f"half starting at image {part[0]} failed")

    monkeypatch.setattr(layer, "_forward_range", broken)
    with pytest.raises(RuntimeError, match="half starting at image 2 failed"):
        layer.run_forward([x], [top])


# ---- when the batch is split


@pytest.fixture
def two_threads_wanted(monkeypatch):
    """As on a 2-CPU machine with Numba and BLAS on two threads (whatever this machine has)."""
    monkeypatch.setattr(convolution, "_CPUS", 2)
    monkeypatch.setattr(convolution, "_BLAS_IDLE_SLEEPS", True)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    with threadpool_limits(limits=2, user_api="blas"):
        yield


def test_split_at_cuts_the_batch_in_two_when_two_threads_are_wanted(two_threads_wanted):
    assert convolution._split_at(64) == 32
    assert convolution._split_at(5) == 3
    assert convolution._split_at(1) == 0


def test_one_thread_path_when_two_threads_must_not_be_used(two_threads_wanted, monkeypatch):
    monkeypatch.setattr(convolution, "SPLIT_BATCH", False)
    assert convolution._split_at(64) == 0
    monkeypatch.setattr(convolution, "SPLIT_BATCH", True)
    monkeypatch.setattr(convolution, "_CPUS", 1)  # one CPU available
    assert convolution._split_at(64) == 0
    monkeypatch.setattr(convolution, "_CPUS", 2)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 1)  # threads == 1 (Numba)
    assert convolution._split_at(64) == 0
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    with threadpool_limits(limits=1, user_api="blas"):  # threads == 1 (BLAS)
        assert convolution._split_at(64) == 0
    monkeypatch.setattr(convolution, "_BLAS_IDLE_SLEEPS", False)  # OpenBLAS's idle threads spin
    assert convolution._split_at(64) == 0
    monkeypatch.setattr(convolution, "_BLAS_IDLE_SLEEPS", True)
    monkeypatch.setattr(convolution, "blas_libs", lambda: ())  # BLAS cannot be held to one thread
    assert convolution._split_at(64) == 0


@pytest.mark.parametrize("first,env,expected", [
    ("import pycaffe_lite", {}, True),
    ("import numpy", {}, False),
    ("import numpy", {"OPENBLAS_THREAD_TIMEOUT": "4"}, True),
], ids=["pycaffe-first", "numpy-first", "numpy-first-timeout-given"])
def test_split_only_where_openblas_idle_threads_sleep(first, env, expected):
    """pycaffe_lite sets OPENBLAS_THREAD_TIMEOUT before NumPy loads OpenBLAS; a script that imports
    NumPy first (without the variable) has spinning BLAS threads, and the split stays off."""
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    code = f"{first}\nfrom pycaffe_lite.layers import convolution\nprint(convolution._BLAS_IDLE_SLEEPS)"
    r = subprocess.run([sys.executable, "-c", code], env={**base, **env, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == str(expected)


def test_busy_machine_guard_turns_the_split_off(two_threads_wanted, monkeypatch):
    monkeypatch.setenv("PLITE_ADAPT_THREADS", "1")
    load = [9.0]
    guard = BusyMachineGuard(every=1, cpus=2, load=lambda: load[0])
    try:
        for _ in range(2):
            guard.tick()
        assert guard.limited
        assert convolution._split_at(64) == 0
        load[0] = 0.0
        for _ in range(2):
            guard.tick()
        assert not guard.limited
        assert convolution._split_at(64) == 32
    finally:
        guard.close()


def test_split_path_runs_serial_kernels_and_one_blas_thread(two_threads_wanted, monkeypatch):
    """Each half calls the serial kernels with BLAS held to one thread; afterwards BLAS has its
    two threads back."""
    from pycaffe_lite._threads import blas_libs

    seen = []
    real = convolution._SERIAL[2]

    def spy(xh, geom, rows):
        seen.append(max(lib.get_num_threads() for lib in blas_libs()))
        real(xh, geom, rows)

    monkeypatch.setattr(convolution, "_SERIAL", (*convolution._SERIAL[:2], spy, convolution._SERIAL[3]))
    layer = make("convolution_param { num_output: 4 kernel_size: 3 }".replace("}", FILLERS))
    monkeypatch.setattr(convolution, "NHWC_MIN_RUN", 1)
    x, top = blob((4, 3, 6, 6)), Blob()
    layer.set_up([x], [top])
    layer.run_forward([x], [top])
    assert seen == [1, 1]
    assert min(lib.get_num_threads() for lib in blas_libs()) == 2


@pytest.mark.parametrize("min_run", [1, 1 << 30], ids=["rows", "columns"])
def test_split_holds_no_more_scratch_than_one_thread(monkeypatch, min_run):
    """The halves cut their chunks from the caller's workspace, half of CHUNK_BYTES each: the
    scratch of a split batch is no larger than one thread's (the worker allocates none), unless
    one image alone outgrows a chunk."""
    # 4 images' columns (K = 45, P = 20) per chunk: 4 on one thread, 2 + 2 on two
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 4 * 45 * 20 * 4)
    sizes = {}
    for split in (False, True):
        monkeypatch.setattr(convolution, "_WORKSPACE", convolution._Workspace())
        _run("convolution_param { num_output: 4 kernel_size: 3 }", (9, 5, 6, 7), min_run, split, monkeypatch)
        sizes[split] = sum(b.nbytes for b in convolution._WORKSPACE.slots.values())
    assert 0 < sizes[True] <= sizes[False] + 4 * 64  # + the rounding of each slot's first part to 64 bytes

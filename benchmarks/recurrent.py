"""Time the recurrent layers at the issue's size: T = 28 steps, N = 64 streams, H = 128 hidden
units, 28 inputs per step (MNIST read row by row), forward + backward, float32.

    python benchmarks/recurrent.py [--reps 50] [--rounds 7] [--types LSTM GRU RNN] [--loop] [--blas]
                                   [--split] [--torch] [--torch-threads K]

Prints, per layer type, the best and median time of forward, backward and both over ``rounds``
rounds of ``reps`` repetitions, and the cost per time step.  ``--loop`` also compares where the
per-step recurrent GEMM runs, for the LSTM forward: a Python loop calling ``np.matmul`` and a
Numba kernel for the gate arithmetic of each step (what the layers do) against the whole time
loop inside Numba calling ``np.dot`` (SciPy's BLAS; needs SciPy); the two alternate round by round,
because this machine's speed drifts with the other processes on it.  ``--blas`` compares the
layers' one-thread BLAS (pycaffe_lite/layers/recurrent.py, through threadpoolctl) with BLAS's own
thread count, alternating in the same way; run it on an idle machine and again while another
process keeps a core busy.  ``--split`` compares one time loop over all N streams with the two
halves of the batch on two threads (what the layers do with two or more CPUs and N >= 16),
alternating likewise.  ``--torch`` times PyTorch's nn.LSTM / nn.GRU / nn.RNN (tanh) of the
same size on the same input and output gradient (forward + backward, dx included), alternating
with ours round by round, and prints ours / PyTorch; ``--torch-threads`` sets PyTorch's thread
count (default: as many threads as our layers use at N = 64: two with two or more CPUs, else one).  PyTorch is a peer, not a dependency: without it the
comparison prints a line saying so and is skipped.  Caffe's RNN computes one more product than
nn.RNN (its output layer o_t = tanh(W_ho h_t + b_o)), so its ratio is not like for like.

PyTorch runs in a child process (see :func:`torch_worker`): in our process, ``import torch``
stops our two threads from overlapping.

Measured on the 2-core AMD EPYC shared with other jobs, with ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` unset for the run (NumPy's OpenBLAS then runs its SkylakeX kernel; this
machine's environment selects Haswell for older OpenBLAS builds), ``--reps 10 --rounds 5``, ours /
PyTorch medians.  One loop on one BLAS thread (before the two-thread split) against PyTorch on
one thread: LSTM 1.24, GRU 0.45, RNN 0.71.  Two threads, in the quietest runs: LSTM 0.86-1.01
against PyTorch on one thread (4.2-5.0 vs 4.9 ms) and 0.42-0.54 against PyTorch on two (which is
slower here than on one), GRU 0.41-0.50, RNN 0.58-0.82; while other jobs hold the second core the
LSTM's ratio goes back to 1.2-1.5.  ``--split`` with the second core free: LSTM 4.2 vs 6.4 ms,
GRU 3.6 vs 4.7, RNN 2.3 vs 2.6 (two threads vs one loop); with both cores busy 1.17-1.22x slower.
The LSTM's time is GEMMs (the per-step recurrent products and, as large, the weight gradient, dx
and the input transform), and PyTorch runs them in MKL and oneDNN with AVX-512: with the Haswell
kernel OpenBLAS is ~1.3x slower than with SkylakeX on them.
"""
import os

# Before numpy/numba are imported (PERFORMANCE_NOTES: spinning idle threads cost 4-5x on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

T, N, H, I = 28, 64, 128, 28


def make(type_: str):
    from google.protobuf import text_format

    import pycaffe_lite.layers  # noqa: F401
    from pycaffe_lite.blob import Blob
    from pycaffe_lite.proto import caffe_pb2
    from pycaffe_lite.registry import LAYERS

    text = (f'name: "r" type: "{type_}" recurrent_param {{ num_output: {H} '
            'weight_filler { type: "uniform" min: -0.08 max: 0.08 } }')
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    layer = LAYERS.get(type_)(param)
    rs = np.random.default_rng(0)
    x, cont = Blob((T, N, I)), Blob((T, N))
    x.data[...] = rs.uniform(0, 1, x.shape)
    cont.data[...] = 1
    cont.data[0] = 0
    bottom, top = [x, cont], [Blob()]
    layer.set_up(bottom, top)
    top[0].diff[...] = rs.uniform(-1, 1, top[0].shape)
    return layer, bottom, top


def time_layer(type_: str, reps: int, rounds: int) -> None:
    layer, bottom, top = make(type_)
    fwd = lambda: layer.run_forward(bottom, top)
    bwd = lambda: layer.run_backward(top, [True, False], bottom)
    fwd()
    bwd()
    tf, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fwd()
        t1 = time.perf_counter()
        for _ in range(reps):
            bwd()
        t2 = time.perf_counter()
        tf.append((t1 - t0) / reps * 1e3)
        tb.append((t2 - t1) / reps * 1e3)
    both = [a + b for a, b in zip(tf, tb)]
    print(f"{type_:5s} T={T} N={N} H={H}: forward {min(tf):.2f} ms (median {statistics.median(tf):.2f}), "
          f"backward {min(tb):.2f} ms (median {statistics.median(tb):.2f}), both {min(both):.2f} ms "
          f"= {min(both) / T * 1e3:.0f} us per step (median {statistics.median(both) / T * 1e3:.0f})")


def compare_loops(reps: int, rounds: int) -> None:
    from numba import njit

    from pycaffe_lite.kernels import recurrent as K

    @njit(cache=False, error_model="numpy")
    def step(act_t, rec, peep, io_c, out_h):
        # the same vectorised cell as K.lstm_forward, for one step; io_c holds cont * c_{t-1}
        for n in range(act_t.shape[0]):
            a, r = act_t[n], rec[n]
            for j in range(a.shape[0]):
                a[j] += r[j]
            K._lstm_cell(a, io_c[n], peep[0], peep[1], peep[2], out_h[n])

    @njit(cache=False, error_model="numpy")
    def gate_state(prev, cont_t, out):
        for n in range(out.shape[0]):
            k, p, o = cont_t[n], prev[n], out[n]
            for d in range(o.shape[0]):
                o[d] = k * p[d]

    @njit(cache=False, error_model="numpy")
    def lstm_forward_in_numba(act, cont, w_t, peep, state0, c, h, hc):
        # the whole time loop in Numba; np.dot inside Numba calls SciPy's BLAS
        rec = np.empty((act.shape[1], act.shape[2]), np.float32)
        for t in range(act.shape[0]):
            gate_state(state0[0] if t == 0 else h[t - 1], cont[t], hc[t])
            gate_state(state0[1] if t == 0 else c[t - 1], cont[t], c[t])
            np.dot(hc[t], w_t, rec)
            step(act[t], rec, peep, c[t], h[t])

    layer, bottom, _ = make("LSTM")
    cont = bottom[1].data
    w_t = layer.blobs[2].data.T
    state0 = np.zeros((2, N, H), np.float32)
    peep = np.zeros((3, H), np.float32)
    pre = layer.input_transform(bottom).copy()
    act = pre.copy()
    c, h, hc = (np.empty((T, N, H), np.float32) for _ in range(3))
    rec = np.empty((N, 4 * H), np.float32)

    def in_numba():
        act[...] = pre
        lstm_forward_in_numba(act, cont, w_t, peep, state0, c, h, hc)

    def python_loop():
        act[...] = pre
        for t in range(T):
            gate_state(state0[0] if t == 0 else h[t - 1], cont[t], hc[t])
            gate_state(state0[1] if t == 0 else c[t - 1], cont[t], c[t])
            np.matmul(hc[t], w_t, out=rec)
            step(act[t], rec, peep, c[t], h[t])

    in_numba()
    ref = h.copy()
    python_loop()
    np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-6)
    times = {"GEMM inside the Numba loop": [], "Python loop of np.matmul + Numba step": []}
    for _ in range(rounds):
        for name, fn in zip(times, (in_numba, python_loop)):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[name].append((time.perf_counter() - t0) / reps * 1e3)
    for name, ts in times.items():
        print(f"LSTM forward loop, {name}: {min(ts):.2f} ms (median {statistics.median(ts):.2f}) "
              f"= {min(ts) / T * 1e3:.0f} us per step")


def compare_blas_threads(types, reps: int, rounds: int) -> None:
    from pycaffe_lite import _threads

    times: dict[tuple[str, str], list[float]] = {}
    for type_ in types:
        layer, bottom, top = make(type_)

        def both(layer=layer, bottom=bottom, top=top):
            layer.run_forward(bottom, top)
            layer.run_backward(top, [True, False], bottom)

        both()
        for _ in range(rounds):
            for mode in ("one BLAS thread", "BLAS's own threads"):
                # None: look threadpoolctl up again; False: as if it were missing (BLAS's own threads)
                _threads._BLAS_LIBS = None if mode == "one BLAS thread" else False
                t0 = time.perf_counter()
                for _ in range(reps):
                    both()
                times.setdefault((type_, mode), []).append((time.perf_counter() - t0) / reps * 1e3)
    _threads._BLAS_LIBS = None
    for (type_, mode), ts in times.items():
        print(f"{type_:5s} forward+backward, {mode}: {min(ts):.2f} ms (median {statistics.median(ts):.2f})")


def compare_split(types, reps: int, rounds: int) -> None:
    import pycaffe_lite.layers.recurrent as R

    modes = {"one loop": 10**9, "two halves on two threads": R.SPLIT_MIN_N}
    times: dict[tuple[str, str], list[float]] = {}
    for type_ in types:
        layer, bottom, top = make(type_)

        def both(layer=layer, bottom=bottom, top=top):
            layer.run_forward(bottom, top)
            layer.run_backward(top, [True, False], bottom)

        for min_n in modes.values():
            R.SPLIT_MIN_N = min_n
            both()
        for _ in range(rounds):
            for mode, min_n in modes.items():
                R.SPLIT_MIN_N = min_n
                t0 = time.perf_counter()
                for _ in range(reps):
                    both()
                times.setdefault((type_, mode), []).append((time.perf_counter() - t0) / reps * 1e3)
    R.SPLIT_MIN_N = modes["two halves on two threads"]
    for type_ in types:
        one, two = (times[(type_, mode)] for mode in modes)
        print(f"{type_:5s} forward+backward: one loop {statistics.median(one):.2f} ms (best {min(one):.2f}), "
              f"two halves on two threads {statistics.median(two):.2f} ms (best {min(two):.2f}); "
              f"two / one = {statistics.median(two) / statistics.median(one):.2f} (median)")


def torch_worker(type_: str, threads: int, reps: int) -> None:
    """The PyTorch side of ``--torch``, in its own process: importing torch into ours stops our
    two threads from running at once (measured: LSTM 4.2 ms before ``import torch``, 7.3-17 ms
    after, with as much CPU time), so the parent times ours and asks this process for PyTorch's
    rounds, one line each ("go" -> milliseconds per repetition; end of input -> exit)."""
    import torch

    torch.set_num_threads(threads)
    modules = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}
    _, bottom, top = make(type_)  # the same input and output gradient as the parent's layer
    module = modules[type_](I, H)  # time-major (T, N, I), tanh for the RNN
    x = torch.from_numpy(bottom[0].data.copy()).requires_grad_(True)
    dy = torch.from_numpy(top[0].diff.copy())

    def theirs():
        module.zero_grad(set_to_none=False)
        x.grad = None
        y, _ = module(x)
        y.backward(dy)

    theirs()
    print(torch.__version__, flush=True)
    for _ in sys.stdin:
        t0 = time.perf_counter()
        for _ in range(reps):
            theirs()
        print((time.perf_counter() - t0) / reps * 1e3, flush=True)


def compare_torch(types, reps: int, rounds: int, threads: int | None) -> None:
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: skipping the comparison with nn.LSTM / nn.GRU / nn.RNN")
        return
    if threads is None:  # as many as our layers use at this batch size
        import pycaffe_lite.layers.recurrent as R

        threads = len(R._row_parts(N))
    for type_ in types:
        layer, bottom, top = make(type_)

        def ours(layer=layer, bottom=bottom, top=top):
            layer.run_forward(bottom, top)
            layer.run_backward(top, [True, False], bottom)

        ours()
        worker = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch-worker", type_, str(threads), str(reps)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        version = worker.stdout.readline().strip()
        times = {"ours": [], "torch": []}
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(reps):
                ours()
            times["ours"].append((time.perf_counter() - t0) / reps * 1e3)
            worker.stdin.write("go\n")
            worker.stdin.flush()
            times["torch"].append(float(worker.stdout.readline()))
        worker.stdin.close()
        worker.wait()
        mo, mt = statistics.median(times["ours"]), statistics.median(times["torch"])
        print(f"{type_:5s} T={T} N={N} H={H} forward+backward: ours {mo:.2f} ms (best {min(times['ours']):.2f}), "
              f"PyTorch {version} nn.{type_} ({threads} thread(s)) {mt:.2f} ms (best "
              f"{min(times['torch']):.2f}); per step {mo / T * 1e3:.0f} vs {mt / T * 1e3:.0f} us; "
              f"ours / PyTorch = {mo / mt:.2f} (median), {min(times['ours']) / min(times['torch']):.2f} (best)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--types", nargs="+", default=["LSTM", "GRU", "RNN"])
    parser.add_argument("--loop", action="store_true", help="compare where the per-step GEMM runs")
    parser.add_argument("--blas", action="store_true", help="compare one BLAS thread with BLAS's own count")
    parser.add_argument("--split", action="store_true", help="compare one time loop with two halves on two threads")
    parser.add_argument("--torch", action="store_true", help="compare with PyTorch's nn.LSTM/nn.GRU/nn.RNN")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's thread count (default: as many as our layers use, 2 with 2+ CPUs)")
    parser.add_argument("--torch-worker", nargs=3, metavar=("TYPE", "THREADS", "REPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        type_, threads, reps = args.torch_worker
        torch_worker(type_, int(threads), int(reps))
        return
    for type_ in args.types:
        time_layer(type_, args.reps, args.rounds)
    if args.loop:
        compare_loops(args.reps, args.rounds)
    if args.blas:
        compare_blas_threads(args.types, args.reps, args.rounds)
    if args.split:
        compare_split(args.types, args.reps, args.rounds)
    if args.torch:
        compare_torch(args.types, args.reps, args.rounds, args.torch_threads)


if __name__ == "__main__":
    main()

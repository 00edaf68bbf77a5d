"""Time the convolution and pooling kernels at LeNet's shapes (batch 64).

    python benchmarks/kernels_bench.py [--calls 200] [--threads N] [--compile]

Prints ms per call (best of 5 runs of ``--calls`` calls, after warm-up) for im2col/col2im in both
layouts, a whole convolution pass (kernels + GEMMs + NCHW transposes) in each layout, and the
pooling kernels.  ``--compile`` also measures each kernel's first-call time in fresh processes,
with an empty cache and with a warm one.
"""
import os

# Before numpy/numba are imported: make idle OpenMP and OpenBLAS threads sleep instead of spin
# (PERFORMANCE_NOTES: the spinning costs 4-5x on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONVS = {  # name: (N, C, H, W, Cout, k)
    "conv1": (64, 1, 28, 28, 20, 5),
    "conv2": (64, 20, 12, 12, 50, 5),
}
POOLS = {  # name: (N, C, H, W, k, s)
    "pool1": (64, 20, 24, 24, 2, 2),
    "pool2": (64, 50, 8, 8, 2, 2),
}


def timeit(fn, calls):
    for _ in range(5):
        fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e3


def bench_conv(calls):
    return [(name, _bench_one_conv(shape, calls)) for name, shape in CONVS.items()]


def _bench_one_conv(shape, calls):
    """Each kernel alone, the GEMMs, and a whole pass per layout (kernels + GEMMs + the copies
    between the GEMM's layout and the NCHW blobs)."""
    from pycaffe_lite.kernels import im2col as K

    N, C, H, W, Cout, k = shape
    rng = np.random.default_rng(0)
    g = K.make_geom(C, H, W, k, k)
    OH, OW = int(g[K.G_OH]), int(g[K.G_OW])
    P, KK = OH * OW, C * k * k
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    Wm = rng.standard_normal((Cout, KK), dtype=np.float32)
    dW = np.zeros_like(Wm)
    top = np.empty((N, Cout, OH, OW), np.float32)
    top_diff = rng.standard_normal(top.shape, dtype=np.float32)
    dx = np.empty_like(x)
    col = np.empty((KK, N * P), np.float32)
    rws = np.empty((N * P, KK), np.float32)
    y_cq = np.empty((Cout, N * P), np.float32)   # layout A GEMM output
    y_qc = np.empty((N * P, Cout), np.float32)   # layout B GEMM output
    td_cq = np.empty((Cout, N * P), np.float32)
    td_qc = np.empty((N * P, Cout), np.float32)
    top3 = top.reshape(N, Cout, P)
    td3 = top_diff.reshape(N, Cout, P)

    def fwd_a():
        K.im2col_batch(x, g, col)
        np.matmul(Wm, col, out=y_cq)
        np.copyto(top3, y_cq.reshape(Cout, N, P).transpose(1, 0, 2))

    def bwd_a():
        np.copyto(td_cq.reshape(Cout, N, P), td3.transpose(1, 0, 2))
        dW[...] += td_cq @ col.T
        dcol = Wm.T @ td_cq
        K.col2im_batch(dcol, g, dx)

    def fwd_b():
        K.im2row_batch(x, g, rws)
        np.matmul(rws, Wm.T, out=y_qc)
        np.copyto(top3, y_qc.reshape(N, P, Cout).transpose(0, 2, 1))

    def bwd_b():
        np.copyto(td_qc.reshape(N, P, Cout), td3.transpose(0, 2, 1))
        dW[...] += td_qc.T @ rws
        drows = td_qc @ Wm
        K.row2im_batch(drows, g, dx)

    dcol = np.ascontiguousarray(rng.standard_normal(col.shape, dtype=np.float32))
    drws = np.ascontiguousarray(dcol.T)
    r = {
        "im2col_batch": timeit(lambda: K.im2col_batch(x, g, col), calls),
        "col2im_batch": timeit(lambda: K.col2im_batch(dcol, g, dx), calls),
        "im2row_batch": timeit(lambda: K.im2row_batch(x, g, rws), calls),
        "row2im_batch": timeit(lambda: K.row2im_batch(drws, g, dx), calls),
        "gemm W@col (A fwd)": timeit(lambda: np.matmul(Wm, col, out=y_cq), calls),
        "gemm rows@W.T (B fwd)": timeit(lambda: np.matmul(rws, Wm.T, out=y_qc), calls),
        "NCHW<-(Cout,N*P) copy": timeit(
            lambda: np.copyto(top3, y_cq.reshape(Cout, N, P).transpose(1, 0, 2)), calls),
        "NCHW<-(N*P,Cout) copy": timeit(
            lambda: np.copyto(top3, y_qc.reshape(N, P, Cout).transpose(0, 2, 1)), calls),
        "pass A fwd": timeit(fwd_a, calls),
        "pass A bwd": timeit(bwd_a, calls),
        "pass B fwd": timeit(fwd_b, calls),
        "pass B bwd": timeit(bwd_b, calls),
    }
    return r


def bench_pool(calls):
    return [(name, _bench_one_pool(shape, calls)) for name, shape in POOLS.items()]


def _bench_one_pool(shape, calls):
    from pycaffe_lite.kernels import pooling as P

    N, C, H, W, k, s = shape
    rng = np.random.default_rng(0)
    g = P.make_pool_geom(H, W, k, k, s, s)
    OH, OW = int(g[P.P_OH]), int(g[P.P_OW])
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    y = np.empty((N, C, OH, OW), np.float32)
    mask = np.empty(y.shape, np.int32)
    td = rng.standard_normal(y.shape, dtype=np.float32)
    dx = np.empty_like(x)
    P.max_pool_forward(x, g, y, mask)
    r = {
        "max_pool_forward": timeit(lambda: P.max_pool_forward(x, g, y, mask), calls),
        "max_pool_backward": timeit(lambda: P.max_pool_backward(td, mask, g, dx), calls),
        "ave_pool_forward": timeit(lambda: P.ave_pool_forward(x, g, y), calls),
        "ave_pool_backward": timeit(lambda: P.ave_pool_backward(td, g, dx), calls),
    }
    return r


_FIRST_CALL = r"""
import os, sys, time
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import numpy as np
from pycaffe_lite.kernels import im2col as K, pooling as P
t_import = time.perf_counter() - t0
g = K.make_geom(3, 9, 8, 3, 2, 2, 1, 1, 0, 1, 2)
N, OH, OW = 2, int(g[K.G_OH]), int(g[K.G_OW])
x = np.ones((N, 3, 9, 8), np.float32)
col = np.empty((3 * 3 * 2, N * OH * OW), np.float32)
rws = np.empty((N * OH * OW, 3 * 3 * 2), np.float32)
pg = P.make_pool_geom(9, 8, 3, 3, 2, 2, 1, 1)
y = np.empty((N, 3, int(pg[P.P_OH]), int(pg[P.P_OW])), np.float32)
m = np.empty(y.shape, np.int32)
calls = [
    ("im2col_batch", lambda: K.im2col_batch(x, g, col)),
    ("col2im_batch", lambda: K.col2im_batch(col, g, x)),
    ("im2row_batch", lambda: K.im2row_batch(x, g, rws)),
    ("row2im_batch", lambda: K.row2im_batch(rws, g, x)),
    ("max_pool_forward", lambda: P.max_pool_forward(x, pg, y, m)),
    ("max_pool_backward", lambda: P.max_pool_backward(y, m, pg, x)),
    ("ave_pool_forward", lambda: P.ave_pool_forward(x, pg, y)),
    ("ave_pool_backward", lambda: P.ave_pool_backward(y, pg, x)),
]
print("import", t_import)
for name, fn in calls:
    t0 = time.perf_counter()
    fn()
    print(name, time.perf_counter() - t0)
"""


def bench_compile():
    env = dict(os.environ)
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        code = _FIRST_CALL.format(root=ROOT)
        for label in ("empty cache", "warm cache"):
            res = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True)
            out[label] = {ln.split()[0]: float(ln.split()[1]) for ln in res.stdout.splitlines()}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0, help="numba threads (0: all)")
    ap.add_argument("--compile", action="store_true", help="also time first calls")
    args = ap.parse_args()
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    print(f"numba threads: {numba.get_num_threads()}  OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}  OPENBLAS_THREAD_TIMEOUT="
          f"{os.environ['OPENBLAS_THREAD_TIMEOUT']}")
    for name, r in bench_conv(args.calls) + bench_pool(args.calls):
        print(name)
        for k, v in r.items():
            print(f"  {k:26s} {v:8.3f} ms")
    if args.compile:
        res = bench_compile()
        print("first call, s:  empty cache  warm cache")
        for k in res["empty cache"]:
            print(f"  {k:20s} {res['empty cache'][k]:8.3f}  {res['warm cache'][k]:8.3f}")


if __name__ == "__main__":
    main()

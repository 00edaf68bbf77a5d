"""Convolution at 1 and 2 threads: the batch split over two threads against BLAS's and Numba's own.

    python benchmarks/conv_threads.py                    # LeNet, CIFAR-10 quick, CaffeNet (~1-2 min)
    python benchmarks/conv_threads.py --nets lenet --rounds 9 --chunk-mb 2,4

Three ways, timed in alternating rounds in one process (A B C, C B A, ...; the figure is the
median over rounds, the ratios the median of per-round ratios, so they hold up when the machine's
speed drifts):

  1 thr    Numba and BLAS on one thread (the layer's one-thread path)
  2 BLAS   two threads, the layer's batch split off (``SPLIT_BATCH = False``): one chunk after
           another, each with OpenBLAS's two threads and the parallel kernels
  2 split  two threads, the batch split in two halves, one per thread, each with one-thread BLAS
           and the serial kernels (pycaffe_lite/layers/convolution.py ``SPLIT_BATCH``)

Rows: each Convolution layer's forward and backward, and the whole train iteration (forward +
backward + SGD) of LeNet (batch 64) and CIFAR-10 quick (batch 100), CaffeNet's deploy forward
(batch 10).  ``--chunk-mb`` times the split with other per-thread chunk sizes
(``SPLIT_CHUNK_BYTES``; by default half of ``CHUNK_BYTES``) as extra columns.  The nets are those
of benchmarks/peers.py.  pycaffe_lite is imported before NumPy here on purpose: its thread
settings (OPENBLAS_THREAD_TIMEOUT) must be in place when OpenBLAS loads, or OpenBLAS's idle
threads spin on the second core and the split halves have to share it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import pycaffe_lite  # noqa: F401  (thread settings before numpy/numba)


def build(net_name: str, batch: int):
    """(label -> callable) for the net's conv layers and its whole iteration."""
    import numpy as np
    from peers import NETS, SGD_SOLVER

    from pycaffe_lite import TEST, TRAIN, Net, SGDSolver

    deploy = net_name == "caffenet"
    net = Net(NETS[net_name](batch), phase=TEST if deploy else TRAIN)
    rng = np.random.default_rng(0)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.data[...] = rng.integers(0, 10, blob.shape) if name == "label" else rng.standard_normal(blob.shape)
    if deploy:
        for blobs in net.params.values():
            for b in blobs:
                b.data[...] = rng.standard_normal(b.shape, dtype=np.float32) * np.float32(0.01)
    fns = {}
    if deploy:
        net.forward()
        fns[f"{net_name} forward"] = net.forward
    else:
        net.forward_loss()
        net.backward()
        solver = SGDSolver(SGD_SOLVER, train_net=net)
        fns[f"{net_name} train iteration"] = lambda: solver.step(1)
    for li, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        if layer.type != "Convolution":
            continue
        bv, tv = net.bottom_vecs[li], net.top_vecs[li]
        fns[f"  {name} fwd"] = lambda layer=layer, bv=bv, tv=tv: layer.run_forward(bv, tv)
        if not deploy and net.layer_need_backward[li]:
            pd = net.bottom_need_backward[li]
            fns[f"  {name} bwd"] = lambda layer=layer, bv=bv, tv=tv, pd=pd: layer.run_backward(tv, pd, bv)
    return fns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="lenet,cifar10_quick,caffenet")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-s", type=float, default=0.25, help="seconds per round and way")
    p.add_argument("--chunk-mb", default="", help="extra split columns: per-thread chunk sizes in MB, e.g. 1,2")
    a = p.parse_args()

    import numba
    from threadpoolctl import threadpool_limits

    from pycaffe_lite.layers import convolution as conv

    batches = {"lenet": 64, "cifar10_quick": 100, "caffenet": 10}
    default_chunk = conv.SPLIT_CHUNK_BYTES  # None: the layer's default
    ways = {"1 thr": (1, False, default_chunk), "2 BLAS": (2, False, default_chunk),
            "2 split": (2, True, default_chunk)}
    for mb in filter(None, a.chunk_mb.split(",")):
        ways[f"split {mb}MB"] = (2, True, int(float(mb) * (1 << 20)))

    def use(way):
        threads, split, chunk = ways[way]
        numba.set_num_threads(threads)
        threadpool_limits(limits=threads, user_api="blas")
        conv.SPLIT_BATCH = split
        conv.SPLIT_CHUNK_BYTES = chunk

    def timed(fn, reps):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps * 1e3

    names = list(ways)
    print(f"| case | {' | '.join(n + ' ms' for n in names)} | 1 thr / 2 BLAS | 1 thr / 2 split | 2 BLAS / 2 split |")
    print("|:--|" + "---:|" * (len(names) + 3))
    t_start = time.perf_counter()
    for net_name in a.nets.split(","):
        fns = build(net_name, batches[net_name])
        for label, fn in fns.items():
            reps = {}
            for way in names:
                use(way)
                fn()
                t = min(timed(fn, 1) for _ in range(3))
                reps[way] = max(1, min(2000, round(a.round_s * 1e3 / max(t, 1e-3))))
            times = {w: [] for w in names}
            for r in range(a.rounds):
                for way in (names if r % 2 == 0 else names[::-1]):
                    use(way)
                    times[way].append(timed(fn, reps[way]))
            med = {w: statistics.median(times[w]) for w in names}

            def ratio(x, y, times=times):
                return statistics.median(p / q for p, q in zip(times[x], times[y]))

            print(f"| {label} | " + " | ".join(f"{med[w]:.2f}" for w in names)
                  + f" | {ratio('1 thr', '2 BLAS'):.2f} | {ratio('1 thr', '2 split'):.2f} | {ratio('2 BLAS', '2 split'):.2f} |",
                  flush=True)
    print(f"\n({a.rounds} alternating rounds per row; whole run {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()

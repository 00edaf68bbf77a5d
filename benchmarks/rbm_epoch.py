"""Time one CD-1 epoch of a Bernoulli RBM on the bundled MNIST digits (the issue's speed bar).

    python benchmarks/rbm_epoch.py [--epochs 5] [--hidden 500] [--batch 20] [--cd-k 1]
                                   [--persistent] [--recon] [--sklearn | --sklearn-only]
                                   [--no-breakdown]

The configuration of the bar: 4,000 training digits (scaled by 1/256, as Caffe's
``transform_param { scale: 0.00390625 }``), 784 visible and 500 hidden units, batch 20 (200
iterations per epoch), SGD with base_lr 0.06, no momentum, no weight decay.  Everything runs
through the framework: an LMDB Data layer, the RBM layer, ``Solver.step(200)`` per epoch.

Prints the time of each epoch (the first one includes loading the Numba cache), the median of
the others, and where one iteration's time goes (data layer, RBM forward, RBM backward, solver
update; each timed alone over one epoch).  ``--recon`` adds the reconstruction-error top (one
more matrix product per iteration).  ``--sklearn`` also times scikit-learn's BernoulliRBM
(``fit`` with ``n_components``, ``batch_size``, ``learning_rate=0.06``, ``n_iter=1``, float32
input scaled by 1/255), epoch for epoch alternating with pycaffe_lite's (this machine's speed
drifts, so only side-by-side epochs compare), if it is installed; it is not a dependency.
``--sklearn-blas-threads 1`` runs scikit-learn's fit on one BLAS thread too (like for like).
``--sklearn-only`` times only scikit-learn's epochs and ``--no-breakdown`` skips the per-part
timing, so that two whole processes (``--epochs 10 --no-breakdown`` and ``--epochs 10
--sklearn-only``) can be timed against each other from outside, e.g. with ``/usr/bin/time``.

The RBM layer runs its products on one BLAS thread (when threadpoolctl is installed; see
``SerialBlas`` in pycaffe_lite/_threads.py); scikit-learn uses BLAS's default.  By default the
layer splits each product in two halves run at once on two threads, each with one BLAS thread
(``SPLIT_PRODUCTS`` in pycaffe_lite/layers/rbm.py, pycaffe_lite/_split.py); ``--serial`` turns
that off.
"""
import os

# Before numpy/numba are imported: make idle OpenMP and OpenBLAS threads sleep instead of spin
# (PERFORMANCE_NOTES: the spinning costs 4-5x on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

N_TRAIN = 4000


def build_solver(lmdb: str, args):
    from pycaffe_lite.solvers import get_solver

    tops = 'top: "h" top: "recon"' if args.recon else 'top: "h"'
    pcd = "persistent: true" if args.persistent else ""
    net = f"""name: "rbm_bench"
      layer {{ name: "mnist" type: "Data" top: "data"
               data_param {{ source: "{lmdb}" batch_size: {args.batch} backend: LMDB }}
               transform_param {{ scale: 0.00390625 }} }}
      layer {{ name: "rbm1" type: "RBM" bottom: "data" {tops}
               rbm_param {{ num_hidden: {args.hidden} cd_k: {args.cd_k} {pcd} }} }}"""
    return get_solver(f'net_param {{ {net} }} base_lr: 0.06 momentum: 0 lr_policy: "fixed" '
                      f'max_iter: 1000000 display: 0 random_seed: 1 snapshot_after_train: false')


def time_epochs(solver, iters: int, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        solver.step(iters)
        times.append(time.perf_counter() - t0)
    return times


def breakdown(solver, iters: int) -> dict[str, float]:
    """ms per iteration of each part, each timed alone over ``iters`` calls."""
    net = solver.net
    data_i, rbm_i = net.layer_names.index("mnist"), net.layer_names.index("rbm1")
    rbm = net.layers[rbm_i]
    parts = {
        "data layer forward": lambda: net.forward_loss(data_i, data_i),
        "RBM forward (statistics + chain)": lambda: net.forward_loss(rbm_i, rbm_i),
        "RBM backward (parameter diffs)": lambda: rbm.run_backward(net.top_vecs[rbm_i], [False],
                                                                    net.bottom_vecs[rbm_i]),
        "solver update (SGD + data -= diff)": solver.apply_update,
    }
    out = {}
    snapshot = [b.data.copy() for b in net.learnable_params]
    for name, fn in parts.items():
        fn()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        out[name] = (time.perf_counter() - t0) / iters * 1e3
    for b, s in zip(net.learnable_params, snapshot):
        b.data[...] = s
    return out


def sklearn_epoch(args):
    """A function timing one epoch of scikit-learn's BernoulliRBM (``fit`` with ``n_iter=1``;
    its set-up, a 392k-value normal draw, is part of the time), or None if it is missing."""
    try:
        from sklearn.neural_network import BernoulliRBM
    except ImportError:
        print("scikit-learn is not installed: skipping its timing")
        return None
    from pycaffe_lite.data.mnist import bundled_mnist_dir, read_idx_images

    x = read_idx_images(bundled_mnist_dir() / "train-images-idx3-ubyte.gz")[:N_TRAIN]
    x = (x.reshape(len(x), -1) / 255.0).astype(np.float32)

    if args.sklearn_blas_threads:
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

        limit = lambda: threadpool_limits(args.sklearn_blas_threads, user_api="blas")
    else:
        import contextlib

        limit = contextlib.nullcontext

    def epoch() -> float:
        model = BernoulliRBM(n_components=args.hidden, batch_size=args.batch, learning_rate=0.06,
                             n_iter=1, random_state=0)
        with limit():
            t0 = time.perf_counter()
            model.fit(x)
            return time.perf_counter() - t0

    return epoch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--cd-k", type=int, default=1)
    ap.add_argument("--persistent", action="store_true", help="PCD instead of CD")
    ap.add_argument("--recon", action="store_true", help="also compute the reconstruction-error top")
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn's BernoulliRBM")
    ap.add_argument("--sklearn-only", action="store_true", help="time only scikit-learn's BernoulliRBM")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the per-part timing")
    ap.add_argument("--serial", action="store_true",
                    help="do not split the RBM layer's products over two threads (rbm.SPLIT_PRODUCTS)")
    ap.add_argument("--sklearn-blas-threads", type=int, default=0,
                    help="run scikit-learn's fit on this many BLAS threads (default: BLAS's own choice)")
    args = ap.parse_args(argv)
    if args.sklearn_only:
        sk_epoch = sklearn_epoch(args)
        if sk_epoch is not None:
            sk_times = [sk_epoch() for _ in range(args.epochs)]
            print("scikit-learn epoch times (s): " + " ".join(f"{t:.3f}" for t in sk_times))
            print(f"scikit-learn BernoulliRBM (float32): {statistics.median(sk_times[1:] or sk_times):.3f} s per "
                  "epoch (median, after the first)")
        return

    import logging

    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    if args.serial:
        from pycaffe_lite.layers import rbm

        rbm.SPLIT_PRODUCTS = False
    from pycaffe_lite.data.mnist import prepare_mnist

    iters = N_TRAIN // args.batch
    sk_epoch = sklearn_epoch(args) if args.sklearn else None
    with tempfile.TemporaryDirectory() as tmp:
        train, _ = prepare_mnist(tmp)
        solver = build_solver(train, args)
        if sk_epoch is None:
            times = time_epochs(solver, iters, args.epochs)
        else:
            # Alternate the two, epoch by epoch: this machine's speed drifts over minutes, so
            # only epochs timed side by side compare fairly.
            times, sk_times = [], []
            for _ in range(args.epochs):
                times += time_epochs(solver, iters, 1)
                sk_times.append(sk_epoch())
        parts = {} if args.no_breakdown else breakdown(solver, iters)
    kind = f"{'PCD' if args.persistent else 'CD'}-{args.cd_k}"
    print(f"RBM 784-{args.hidden}, {kind}, batch {args.batch}, {iters} iterations per epoch"
          f"{', with the reconstruction-error top' if args.recon else ''}")
    print("epoch times (s): " + " ".join(f"{t:.3f}" for t in times) + "  (the first loads the kernels)")
    warm = times[1:] or times
    print(f"pycaffe_lite: {statistics.median(warm):.3f} s per epoch (median of {len(warm)}; best "
          f"{min(warm):.3f}), {statistics.median(warm) / iters * 1e3:.2f} ms per iteration")
    for name, ms in parts.items():
        print(f"  {name:36s} {ms:7.3f} ms")
    if sk_epoch is not None:
        sk_warm = sk_times[1:] or sk_times
        ratios = [a / b for a, b in zip(times[1:], sk_times[1:])] or [times[0] / sk_times[0]]
        print("scikit-learn epoch times (s): " + " ".join(f"{t:.3f}" for t in sk_times))
        print(f"scikit-learn BernoulliRBM (float32): {statistics.median(sk_warm):.3f} s per epoch (best "
              f"{min(sk_warm):.3f}); pycaffe_lite / scikit-learn: best / best {min(warm) / min(sk_warm):.2f}, "
              f"epoch by epoch median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()

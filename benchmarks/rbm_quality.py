"""Model quality after the same training: pycaffe_lite's RBM layer vs scikit-learn's BernoulliRBM.

    python benchmarks/rbm_quality.py [--epochs 10] [--hidden 500] [--batch 20] [--lr 0.06]
                                     [--test-items 1000]

The issue's quality bar: at the same epochs and learning rate, the test reconstruction error
and the pseudo-log-likelihood no worse than scikit-learn's.  Both models see the same data: the
bundled 4,000 training digits scaled by 1/256 (Caffe's ``scale: 0.00390625``), in the same
order, in batches of 20, plain SGD (no momentum, no weight decay: scikit-learn has neither),
weights drawn from N(0, 0.01^2), biases 0.  Ours trains through the framework (LMDB Data layer,
RBM layer, ``Solver.step``) by CD-1 (the models/rbm recipe) and by PCD-1 (the algorithm
scikit-learn's ``fit`` runs: persistent chains, sampled visible states); scikit-learn's
``BernoulliRBM(n_components, batch_size, learning_rate, n_iter=epochs)`` in float32.

Every figure is computed by :mod:`pycaffe_lite.rbm_eval` from each model's ``W, b, c``
(scikit-learn's ``components_``, ``intercept_visible_``, ``intercept_hidden_``) on the 1,000
test digits:

* reconstruction error: ``(1/N) sum ||x - sigmoid(b + P(h|x) W)||^2`` (lower is better);
* pseudo-log-likelihood, exact: ``sum_i log P(x_i | x_-i)`` over all 784 pixels, in nats per
  digit (higher is better);
* pseudo-log-likelihood, one-bit estimate: scikit-learn's ``score_samples`` estimator
  (``V log sigmoid(F(x with one random pixel flipped) - F(x))``), with the same random pixels
  for every model; noisy, shown because it is what ``score_samples`` reports (printed too).

Prints each model's figures and the ratios ours / scikit-learn's.  scikit-learn is optional
(never a dependency): without it only our figures are printed.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

N_TRAIN = 4000
SCALE = 0.00390625


def train_ours(lmdb: str, args, persistent: bool):
    """``(W, b, c, seconds)`` after ``args.epochs`` passes of CD-1 or PCD-1 through the framework."""
    from pycaffe_lite import rbm_eval
    from pycaffe_lite.solvers import get_solver

    pcd = "persistent: true" if persistent else ""
    net = f"""name: "rbm_quality"
      layer {{ name: "mnist" type: "Data" top: "data"
               data_param {{ source: "{lmdb}" batch_size: {args.batch} backend: LMDB }}
               transform_param {{ scale: {SCALE} }} }}
      layer {{ name: "rbm1" type: "RBM" bottom: "data" top: "h"
               rbm_param {{ num_hidden: {args.hidden} cd_k: 1 {pcd} }} }}"""
    solver = get_solver(f'net_param {{ {net} }} base_lr: {args.lr} momentum: 0 lr_policy: "fixed" '
                        f'max_iter: 100000000 display: 0 random_seed: {args.seed} snapshot_after_train: false')
    t0 = time.perf_counter()
    solver.step(args.epochs * (N_TRAIN // args.batch))
    seconds = time.perf_counter() - t0
    W, b, c, _ = rbm_eval.params_from_layer(solver.net.layer_dict["rbm1"])
    return W, b, c, seconds


def train_sklearn(x_train: np.ndarray, args):
    """``(W, b, c, seconds, model)`` of scikit-learn's BernoulliRBM, or None if it is missing."""
    try:
        from sklearn.neural_network import BernoulliRBM
    except ImportError:
        print("scikit-learn is not installed: skipping its model")
        return None
    model = BernoulliRBM(n_components=args.hidden, batch_size=args.batch, learning_rate=args.lr,
                         n_iter=args.epochs, random_state=args.seed)
    t0 = time.perf_counter()
    model.fit(x_train.astype(np.float32))
    seconds = time.perf_counter() - t0
    return model.components_, model.intercept_visible_, model.intercept_hidden_, seconds, model


def figures(x_test: np.ndarray, W, b, c, flips: np.ndarray) -> dict[str, float]:
    from pycaffe_lite import rbm_eval

    class FixedFlips:  # hands pseudo_log_likelihood the same "random" pixels for every model
        def integers(self, lo, hi, size):
            return flips[:size]

    return {
        "test reconstruction error": rbm_eval.reconstruction_error(x_test, W, b, c),
        "test PLL, exact (nats)": float(np.mean(rbm_eval.pseudo_log_likelihood(x_test, W, b, c))),
        "test PLL, one-bit estimate (nats)": float(np.mean(
            rbm_eval.pseudo_log_likelihood(x_test, W, b, c, rng=FixedFlips()))),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.06)
    ap.add_argument("--test-items", type=int, default=1000, help="test digits to score (default all 1,000)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    import logging

    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    from pycaffe_lite.data.mnist import bundled_mnist_dir, prepare_mnist, read_idx_images

    mnist = bundled_mnist_dir()
    x_train = read_idx_images(mnist / "train-images-idx3-ubyte.gz")[:N_TRAIN].reshape(N_TRAIN, -1) * SCALE
    x_test = read_idx_images(mnist / "t10k-images-idx3-ubyte.gz")[: args.test_items]
    x_test = x_test.reshape(len(x_test), -1) * SCALE
    flips = np.random.default_rng(0).integers(0, x_test.shape[1], size=len(x_test))

    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        train_lmdb, _ = prepare_mnist(tmp)
        for name, persistent in (("pycaffe_lite CD-1", False), ("pycaffe_lite PCD-1", True)):
            W, b, c, seconds[name] = train_ours(train_lmdb, args, persistent)
            results[name] = figures(x_test, W, b, c, flips)
    sk = train_sklearn(x_train, args)
    if sk is not None:
        W, b, c, seconds["scikit-learn"], model = sk
        results["scikit-learn"] = figures(x_test, W, b, c, flips)
        rng = np.random.RandomState(0)  # score_samples draws its own pixels
        model.random_state = rng
        own = float(np.mean(model.score_samples(x_test.astype(np.float32))))

    print(f"RBM 784-{args.hidden}, {args.epochs} epochs of the {N_TRAIN} bundled digits, batch {args.batch}, "
          f"lr {args.lr}, no momentum / weight decay; scored on {len(x_test)} test digits")
    names = list(results)
    metrics = list(results[names[0]])
    width = max(len(m) for m in metrics) + 2
    print(" " * width + "".join(f"{n:>22s}" for n in names))
    for m in metrics:
        print(f"{m:{width}s}" + "".join(f"{results[n][m]:22.4f}" for n in names))
    print(f"{'training time (s)':{width}s}" + "".join(f"{seconds[n]:22.2f}" for n in names))
    if sk is not None:
        print(f"scikit-learn's own score_samples (its random pixels): {own:.4f}")
        for n in names[:-1]:
            ours, theirs = results[n], results["scikit-learn"]
            print(f"{n} / scikit-learn: reconstruction error "
                  f"{ours['test reconstruction error'] / theirs['test reconstruction error']:.3f} (< 1 is better), "
                  f"exact PLL {ours['test PLL, exact (nats)'] / theirs['test PLL, exact (nats)']:.3f} "
                  f"(negative numbers: < 1 is better)")


if __name__ == "__main__":
    main()

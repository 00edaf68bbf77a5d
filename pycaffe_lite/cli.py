"""`plite`: the command line, one function per verb in a table (Caffe's brew map).

    plite train --solver S [--weights a.caffemodel[,b.caffemodel]] [--snapshot X.solverstate]
    plite test  --model M --weights W [--iterations 50]
    plite time  --model M [--iterations 50]
    plite data mnist [--out-dir data/mnist] [--idx-dir DIR]
    plite upgrade IN OUT

Caffe's single-dash spellings (``-solver``, ``-model``...) are accepted too.  Errors
print one actionable message and exit 1; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable

from . import _threads  # noqa: F401  (before numpy/numba)

log = logging.getLogger("pycaffe_lite")


# ------------------------------------------------------------------------ verbs
def cmd_train(args) -> int:
    from .solvers import get_solver

    solver = get_solver(args.solver, level=args.level, stages=_stages(args))
    if args.snapshot and args.weights:
        from .errors import SolverConfigError

        raise SolverConfigError("give either --snapshot (resume) or --weights (fine-tune), not both")
    if args.weights:
        for w in args.weights.split(","):
            log.info("Copying weights from %s", w)
            solver.net.copy_from(w)
            for tn in solver.test_nets:
                tn.copy_from(w)
    progress = _progress_bar(solver) if _use_progress(args) else None
    if progress is not None:
        solver.progress = progress
    log.info("Starting Optimization")
    try:
        solver.solve(args.snapshot or None)
    finally:
        if progress is not None:
            progress.close()
    return 130 if getattr(solver, "interrupted", False) else 0


def cmd_test(args) -> int:
    import numpy as np

    from .layer import TEST
    from .net import Net

    net = Net(args.model, phase=TEST, level=args.level, stages=_stages(args), weights=args.weights.split(",")
              if args.weights else None)
    if not args.weights:
        log.warning("no --weights given: testing randomly initialised parameters")
    log.info("Running for %d iterations.", args.iterations)
    names: list[str] = []
    scores: list[float] = []
    loss = 0.0
    for i in range(args.iterations):
        iter_loss = net.forward_loss()
        loss += iter_loss
        k = 0
        for name in net.outputs:
            for v in net.blobs[name].data.ravel():
                if i == 0:
                    names.append(name)
                    scores.append(float(v))
                else:
                    scores[k] += float(v)
                log.info("Batch %d, %s = %s", i, name, _g(v))
                k += 1
    loss /= args.iterations
    log.info("Loss: %s", _g(loss))
    for name, total in zip(names, scores):
        mean = total / args.iterations
        w = net.blob_loss_weights.get(name, 0.0)
        extra = f" (* {_g(w)} = {_g(w * mean)} loss)" if w else ""
        log.info("%s = %s%s", name, _g(mean), extra)
    del np
    return 0


def cmd_time(args) -> int:
    from .layer import TRAIN
    from .net import Net

    net = Net(args.model, phase=TRAIN, level=args.level, stages=_stages(args))
    n = args.iterations
    log.info("Performing Forward")
    t0 = time.perf_counter()
    loss = net.forward_loss()
    log.info("Initial loss: %s", _g(loss))
    log.info("Performing Backward")
    net.backward()
    log.info("Initial forward-backward (includes warm-up, compilation): %.2f ms.", (time.perf_counter() - t0) * 1e3)
    fwd = [0.0] * len(net.layers)
    bwd = [0.0] * len(net.layers)
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", n)
    total_f = total_b = 0.0
    clock = time.perf_counter
    start_all = clock()
    for it in range(n):
        t_iter = clock()
        for li, layer in enumerate(net.layers):
            t = clock()
            layer.run_forward(net.bottom_vecs[li], net.top_vecs[li])
            fwd[li] += clock() - t
        t_mid = clock()
        total_f += t_mid - t_iter
        for li in range(len(net.layers) - 1, -1, -1):
            if not net.layer_need_backward[li]:
                continue
            t = clock()
            net.layers[li].run_backward(net.top_vecs[li], net.bottom_need_backward[li], net.bottom_vecs[li])
            bwd[li] += clock() - t
        total_b += clock() - t_mid
        log.info("Iteration: %d forward-backward time: %.3f ms.", it + 1, (clock() - t_iter) * 1e3)
    total = clock() - start_all
    width = max((len(x) for x in net.layer_names), default=8)
    for li, name in enumerate(net.layer_names):
        log.info("%s\tforward: %.5f ms.", name.rjust(width), fwd[li] / n * 1e3)
        log.info("%s\tbackward: %.5f ms.", name.rjust(width), bwd[li] / n * 1e3)
    log.info("Average Forward pass: %.5f ms.", total_f / n * 1e3)
    log.info("Average Backward pass: %.5f ms.", total_b / n * 1e3)
    log.info("Average Forward-Backward: %.5f ms.", total / n * 1e3)
    log.info("Total Time: %.3f ms.", total * 1e3)
    log.info("*** Benchmark ends ***")
    return 0


def cmd_data_mnist(args) -> int:
    from .data.mnist import prepare_mnist

    paths = prepare_mnist(args.out_dir, idx_dir=args.idx_dir, limit=args.limit, overwrite=True)
    for p in paths:
        log.info("Wrote %s", p)
    return 0


def cmd_upgrade(args) -> int:
    from .io.prototxt import upgrade_file

    upgrade_file(args.input, args.output)
    log.info("Wrote upgraded %s to %s", args.input, args.output)
    return 0


# ------------------------------------------------------------------------ helpers
def _g(v) -> str:
    return f"{float(v):.6g}"


def _stages(args) -> list[str] | None:
    return args.stage.split(",") if getattr(args, "stage", None) else None


def _use_progress(args) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _progress_bar(solver):
    """A tqdm bar on a terminal; log lines are routed above it."""
    from tqdm import tqdm

    from .log import route_logging_through

    bar = tqdm(total=solver.param.max_iter, file=sys.stderr, initial=solver.iter, unit="iter", dynamic_ncols=True, leave=False)
    route_logging_through(lambda s: tqdm.write(s, file=sys.stderr))

    def progress(it: int, max_iter: int, loss: float) -> None:
        bar.n = it
        bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
        bar.refresh()

    progress.close = bar.close  # type: ignore[attr-defined]
    return progress


def _add(p: argparse.ArgumentParser, name: str, **kw) -> None:
    """Add ``--name`` with Caffe's ``-name`` spelling as an alias."""
    p.add_argument(f"--{name}", f"-{name}", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plite", description="pycaffe_lite: Caffe-style nets in Python.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, fn: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return p

    p = verb("train", cmd_train, "train a net with a solver prototxt")
    _add(p, "solver", required=True, help="solver prototxt")
    _add(p, "weights", help="caffemodel(s) to fine-tune from, comma separated")
    _add(p, "snapshot", help="solverstate to resume from")
    _add(p, "level", type=int, default=None, help="net state level")
    _add(p, "stage", help="net state stages, comma separated")
    p.add_argument("--no-progress", action="store_true", help="plain log lines even on a terminal")

    p = verb("test", cmd_test, "score a net: mean of every output over --iterations batches")
    _add(p, "model", required=True, help="net prototxt")
    _add(p, "weights", help="caffemodel(s)")
    _add(p, "iterations", type=int, default=50, help="number of batches (default 50)")
    _add(p, "level", type=int, default=None)
    _add(p, "stage")

    p = verb("time", cmd_time, "time forward/backward, per layer, like `caffe time`")
    _add(p, "model", required=True, help="net prototxt")
    _add(p, "iterations", type=int, default=50, help="timed iterations (default 50)")
    _add(p, "level", type=int, default=None)
    _add(p, "stage")

    p = verb("data", None, "create datasets")
    dsub = p.add_subparsers(dest="dataset", metavar="DATASET")
    d = dsub.add_parser("mnist", help="MNIST IDX files -> LMDBs (the bundled 5,000 digits by default)")
    d.set_defaults(fn=cmd_data_mnist)
    d.add_argument("--out-dir", default="data/mnist", help="where mnist_train_lmdb/mnist_test_lmdb go "
                   "(default data/mnist, where models/lenet looks)")
    d.add_argument("--idx-dir", help="folder with the full MNIST IDX files (optionally .gz)")
    d.add_argument("--limit", type=int, help="keep only the first N digits of each set")

    p = verb("upgrade", cmd_upgrade, "upgrade a legacy (V0/V1) net or solver prototxt to the current format")
    p.add_argument("input")
    p.add_argument("output")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import PliteError
    from .log import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:
        parser.print_help()
        return 2
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        return args.fn(args)
    except PliteError as e:
        if args.debug:
            raise
        print(f"plite: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("plite: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

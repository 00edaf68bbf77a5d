"""`plite`: the command line, one function per verb in a table (Caffe's brew map).

    plite train --solver S [--weights a.caffemodel[,b.caffemodel]] [--snapshot X.solverstate]
    plite test  --model M --weights W [--iterations 50] [--report [--scores B --labels B] [--reject-threshold T ...]]
    plite time  --model M [--iterations 50]
    plite data mnist [--out-dir data/mnist] [--idx-dir DIR] [--siamese]
    plite data imageset ROOT LISTFILE DB [--resize-height H --resize-width W --gray --shuffle --encoded]
    plite data mean DB OUT.binaryproto
    plite data pca DB OUT.binaryproto  /  plite data stats DB OUT.binaryproto  /  plite data whiten DB OUT --epsilon E
    plite data preview --model M --out grid.png [--source DB] [--n 64] [--seed S]   (augmented samples)
    plite data adding [--T 50] [--n-train 10000] [--n-test 1000] [--seed 0] [--out-dir data/adding]
    plite upgrade IN OUT                      (prototxt, or a binary caffemodel)
    plite draw NET OUT.{png,svg,dot} [--rankdir LR] [--phase TRAIN|TEST|ALL]
    plite log parse LOG [OUT_DIR]  /  plite log plot LOG OUT.png [--x iters|seconds] [--y loss ...]
    plite features --model M --weights W --blobs b1,b2 --iterations N --out DIR [--format npy|lmdb]
    plite convert A B                         (.prototxt <-> .yaml)
    plite models [--dir models]
    plite summary --model M [--phase TRAIN|TEST] [--activations [--weights W]]
                                              (per layer: top shape, neurons, parameters, connections)
    plite gradnorm --model M --layer L [--weights W] [--out grad.png] [--iterations 1]
                                              (||dJ/dh_k||, k = T..1, of a recurrent layer)
    plite rbm show --model deploy.prototxt --weights W --out DIR [--data LMDB]   (RBM pictures, PNG)

Nets and solvers may be prototxt or YAML (.yaml/.yml) everywhere.  ``--lenient`` (train,
test, time, draw) skips fields BVLC Caffe's schema lacks (a fork's) with a warning.

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
    collector = thresholds = None
    if args.report or args.scores or args.labels or args.reject_threshold:  # any report option asks for it
        from .report import ReportCollector, parse_thresholds

        thresholds = parse_thresholds(args.reject_threshold)
        collector = ReportCollector(net, args.scores, args.labels)
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
        if collector is not None:
            collector.add()
    loss /= args.iterations
    log.info("Loss: %s", _g(loss))
    for name, total in zip(names, scores):
        mean = total / args.iterations
        w = net.blob_loss_weights.get(name, 0.0)
        extra = f" (* {_g(w)} = {_g(w * mean)} loss)" if w else ""
        log.info("%s = %s%s", name, _g(mean), extra)
    if collector is not None:
        print(collector.report(thresholds).format())
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
    from .data.mnist import prepare_mnist, prepare_mnist_siamese

    if args.siamese:
        paths = prepare_mnist_siamese(args.out_dir, idx_dir=args.idx_dir, limit=args.limit, seed=args.seed,
                                      overwrite=True)
    else:
        paths = prepare_mnist(args.out_dir, idx_dir=args.idx_dir, limit=args.limit, overwrite=True)
    for p in paths:
        log.info("Wrote %s", p)
    return 0


def cmd_data_adding(args) -> int:
    from .data.adding import prepare_adding

    for p in prepare_adding(args.out_dir, args.T, args.n_train, args.n_test, seed=args.seed):
        log.info("Wrote %s", p)
    return 0


def cmd_upgrade(args) -> int:
    from .io.caffemodel import is_binary_proto_file, upgrade_caffemodel
    from .io.prototxt import upgrade_file

    if is_binary_proto_file(args.input):
        upgrade_caffemodel(args.input, args.output)
        log.info("Wrote upgraded binary caffemodel %s to %s", args.input, args.output)
        return 0
    upgrade_file(args.input, args.output)
    log.info("Wrote upgraded %s to %s", args.input, args.output)
    return 0


def cmd_draw(args) -> int:
    from .draw import PHASES, draw_net_to_file
    from .io.prototxt import read_net

    net = read_net(args.net).param
    how = draw_net_to_file(net, args.out, rankdir=args.rankdir, phase=PHASES[args.phase])
    log.info("Drew %s (phase %s, rankdir %s) to %s%s", args.net, args.phase, args.rankdir, args.out,
             " with Graphviz" if how == "graphviz" else "")
    return 0


def cmd_log_parse(args) -> int:
    from .log_parse import parse_log, save_csv

    parsed = parse_log(args.log)
    train, test = save_csv(parsed, args.log, args.out_dir)
    log.info("Wrote %s (%d rows) and %s (%d rows)", train, len(parsed.train), test, len(parsed.test))
    return 0


def cmd_log_plot(args) -> int:
    from .log_parse import plot_log

    y = [v for item in args.y or [] for v in item.split(",") if v] or None
    out = plot_log(args.log, args.out, x=args.x, y=y)
    log.info("Wrote %s", out)
    return 0


def cmd_data_imageset(args) -> int:
    from .data.images import convert_imageset

    n = convert_imageset(args.root, args.listfile, args.db, resize_height=args.resize_height,
                         resize_width=args.resize_width, gray=args.gray, shuffle=args.shuffle,
                         encoded=args.encoded, encode_type=args.encode_type or "", check_size=args.check_size)
    log.info("Wrote %d images to %s", n, args.db)
    return 0


def cmd_data_mean(args) -> int:
    from .data.mean import compute_mean, save_mean

    save_mean(compute_mean(args.db), args.output)
    log.info("Wrote the mean of %s to %s", args.db, args.output)
    return 0


def cmd_data_pca(args) -> int:
    from .data.mean import save_mean
    from .data.pca import compute_pca

    save_mean(compute_pca(args.db, args.max_pixel_value), args.output)
    log.info("Wrote the RGB PCA of %s to %s (transform_param { pca_file: \"%s\" })", args.db, args.output, args.output)
    return 0


def cmd_data_stats(args) -> int:
    from .data.mean import save_mean
    from .data.pca import compute_stats

    save_mean(compute_stats(args.db), args.output)
    log.info("Wrote the channel mean/std of %s to %s (transform_param { stats_file: \"%s\" })",
             args.db, args.output, args.output)
    return 0


def cmd_data_whiten(args) -> int:
    from .data.mean import save_mean
    from .data.pca import compute_whitening

    save_mean(compute_whitening(args.db, args.epsilon, args.mode, args.max_pixel_value), args.output)
    log.info("Wrote the %s whitening of %s to %s (transform_param { whiten_file: \"%s\" })",
             args.mode.upper(), args.db, args.output, args.output)
    return 0


def cmd_data_preview(args) -> int:
    from .data.preview import write_preview
    from .layer import TEST, TRAIN

    width, height = write_preview(args.model, args.out, source=args.source, n=args.n, seed=args.seed,
                                  phase=TRAIN if args.phase == "TRAIN" else TEST, zoom=args.zoom)
    log.info("Preview grid %dx%d pixels", width, height)
    return 0


def cmd_features(args) -> int:
    from .features import extract_features

    blobs = [b for b in args.blobs.split(",") if b]
    weights = args.weights.split(",") if args.weights else None
    if not weights:
        log.warning("no --weights given: extracting features of randomly initialised parameters")
    extract_features(args.model, weights, blobs, args.iterations, args.out, fmt=args.format)
    return 0


def cmd_convert(args) -> int:
    from .io.yaml_format import convert_file

    message = convert_file(args.input, args.output)
    log.info("Wrote %s (%s) to %s", args.input, type(message).__name__, args.output)
    return 0


def cmd_models(args) -> int:
    from .model_cards import list_models

    cards, without = list_models(args.dir)
    for c in cards:
        shape = "x".join(str(d) for d in c.input_shape)
        weights = f"{c.weights_file} [{c.weights_status()}]" if c.weights_file else "none"
        print(f"{c.folder.name}: {c.name}\n    task: {c.task}\n    dataset: {c.dataset}\n    input: {shape}"
              f"\n    source: {c.source}\n    weights: {weights}\n    licence: {c.licence}")
    for folder in without:
        print(f"{folder.name}: (no model.yaml)")
    if not cards and not without:
        log.warning("no models under %s", args.dir)
    return 0


def cmd_summary(args) -> int:
    from .layer import TEST, TRAIN
    from .net import Net
    from .summary import format_summary, summarize

    net = Net(args.model, phase=TRAIN if args.phase == "TRAIN" else TEST, level=args.level, stages=_stages(args),
              weights=args.weights.split(",") if args.weights else None)
    print(f"{net.name or args.model} (phase {args.phase})")
    if args.activations and not args.weights:
        log.info("no --weights: activations of the fillers' initial parameters")
    print(format_summary(summarize(net, activations=args.activations)))
    return 0


def cmd_rbm_show(args) -> int:
    from .rbm_show import ShowOptions, show

    opts = ShowOptions(n_filters=args.filters, n_data=args.digits, n_chains=args.chains, n_columns=args.columns,
                       steps=args.steps, scale=args.scale, seed=args.seed)
    show(args.model, args.weights, args.out, data=args.data, layer_name=args.layer, options=opts)
    return 0


def cmd_gradnorm(args) -> int:
    from .gradnorm import run_gradnorm

    run_gradnorm(args.model, args.layer, weights=args.weights.split(",") if args.weights else None, out=args.out,
                 iterations=args.iterations, phase=args.phase, grad=args.grad, all_steps=args.all_steps)
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
    p.add_argument("--lenient", action="store_true", help="skip fields a Caffe fork added, with a warning")

    p = verb("test", cmd_test, "score a net: mean of every output over --iterations batches")
    _add(p, "model", required=True, help="net prototxt")
    _add(p, "weights", help="caffemodel(s)")
    _add(p, "iterations", type=int, default=50, help="number of batches (default 50)")
    _add(p, "level", type=int, default=None)
    _add(p, "stage")
    p.add_argument("--lenient", action="store_true", help="skip fields a Caffe fork added, with a warning")
    p.add_argument("--report", action="store_true", help="print a confusion matrix, per-class precision/recall/F1 "
                   "and information measures (bits) of the predictions (see pycaffe_lite/report.py)")
    p.add_argument("--scores", help="(implies --report) blob of class scores or probabilities (default: the "
                   "Accuracy/SoftmaxWithLoss layer's first bottom)")
    p.add_argument("--labels", help="(implies --report) blob of labels (default: that layer's second bottom)")
    p.add_argument("--reject-threshold", nargs="+", metavar="T", help="(implies --report) rejection/error/correct "
                   "rates when rejecting top probabilities below T (several values or comma separated)")

    p = verb("time", cmd_time, "time forward/backward, per layer, like `caffe time`")
    _add(p, "model", required=True, help="net prototxt")
    _add(p, "iterations", type=int, default=50, help="timed iterations (default 50)")
    _add(p, "level", type=int, default=None)
    _add(p, "stage")
    p.add_argument("--lenient", action="store_true", help="skip fields a Caffe fork added, with a warning")

    p = verb("data", None, "create datasets")
    dsub = p.add_subparsers(dest="dataset", metavar="DATASET")
    d = dsub.add_parser("mnist", help="MNIST IDX files -> LMDBs (the bundled 5,000 digits by default)")
    d.set_defaults(fn=cmd_data_mnist)
    d.add_argument("--out-dir", default="data/mnist", help="where mnist_train_lmdb/mnist_test_lmdb go "
                   "(default data/mnist, where models/lenet looks)")
    d.add_argument("--idx-dir", help="folder with the full MNIST IDX files (optionally .gz)")
    d.add_argument("--limit", type=int, help="keep only the first N digits of each set")
    d.add_argument("--siamese", action="store_true", help="random digit pairs (2-channel Datums, label 1 = same "
                   "digit) -> mnist_siamese_{train,test}_lmdb, as examples/siamese/create_mnist_siamese.sh")
    d.add_argument("--seed", type=int, default=0, help="seed of the --siamese pairing (default 0)")
    d = dsub.add_parser("imageset", help="image list ('path label' lines) -> LMDB of Datum, like convert_imageset")
    d.set_defaults(fn=cmd_data_imageset)
    d.add_argument("root", help="folder the list's paths are relative to")
    d.add_argument("listfile", help="text file: one 'relative/path label' per line")
    d.add_argument("db", help="LMDB folder to write")
    d.add_argument("--resize-height", "-resize_height", type=int, default=0)
    d.add_argument("--resize-width", "-resize_width", type=int, default=0)
    d.add_argument("--gray", "-gray", action="store_true", help="read images as grey (1 channel)")
    d.add_argument("--shuffle", "-shuffle", action="store_true", help="shuffle the list (see set_random_seed)")
    d.add_argument("--encoded", "-encoded", action="store_true", help="store encoded images (PNG/JPEG bytes)")
    d.add_argument("--encode-type", "-encode_type", choices=["png", "jpg"], help="encoding (default: the file's)")
    d.add_argument("--check-size", "-check_size", action="store_true", help="fail when images differ in size")
    d = dsub.add_parser("mean", help="per-pixel mean of an LMDB -> binaryproto, like compute_image_mean")
    d.set_defaults(fn=cmd_data_mean)
    d.add_argument("db")
    d.add_argument("output")
    d = dsub.add_parser("pca", help="RGB covariance eigenvalues/eigenvectors of an LMDB -> binaryproto "
                        "(transform_param pca_file: AlexNet's lighting noise)")
    d.set_defaults(fn=cmd_data_pca)
    d.add_argument("db")
    d.add_argument("output")
    d.add_argument("--max-pixel-value", type=float, default=255.0, help="full intensity (default 255)")
    d = dsub.add_parser("stats", help="per-channel mean and std of an LMDB -> binaryproto (transform_param stats_file)")
    d.set_defaults(fn=cmd_data_stats)
    d.add_argument("db")
    d.add_argument("output")
    d = dsub.add_parser("whiten", help="ZCA/PCA whitening matrix of an LMDB -> binaryproto (transform_param whiten_file)")
    d.set_defaults(fn=cmd_data_whiten)
    d.add_argument("db")
    d.add_argument("output")
    d.add_argument("--epsilon", type=float, required=True, help="added to the eigenvalues (e.g. 0.01-0.1)")
    d.add_argument("--mode", choices=["zca", "pca"], default="zca", help="zca (default) or pca")
    d.add_argument("--max-pixel-value", type=float, default=255.0, help="full intensity (default 255)")
    d = dsub.add_parser("preview", help="PNG grid of augmented samples, as the net's transform_param makes them")
    d.set_defaults(fn=cmd_data_preview)
    _add(d, "model", required=True, help="net prototxt (its Data layer) or a transform_param prototxt")
    d.add_argument("--source", help="LMDB (default: the Data layer's source)")
    d.add_argument("--out", required=True, help="PNG to write")
    d.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the augmentation (default 0)")
    d.add_argument("--phase", default="TRAIN", type=str.upper, choices=["TRAIN", "TEST"])
    d.add_argument("--zoom", type=int, default=0, help="magnification (default: tiles of at least 64 pixels)")
    d = dsub.add_parser("adding", help="the adding problem (two marked numbers in T random ones, target their "
                        "sum) -> {train,test}_{x,y}_lmdb, for models/adding_problem")
    d.set_defaults(fn=cmd_data_adding)
    d.add_argument("--T", type=int, default=50, help="sequence length (default 50)")
    d.add_argument("--n-train", type=int, default=10000, help="training sequences (default 10000)")
    d.add_argument("--n-test", type=int, default=1000, help="test sequences (default 1000)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--out-dir", default="data/adding", help="where the LMDBs go (default data/adding, where "
                   "models/adding_problem looks)")

    p = verb("upgrade", cmd_upgrade, "upgrade a legacy (V0/V1) net or solver prototxt to the current format")
    p.add_argument("input")
    p.add_argument("output")

    p = verb("draw", cmd_draw, "draw a net: .png/.svg (Graphviz if installed, else built in) or .dot text")
    p.add_argument("net", help="net prototxt or YAML")
    p.add_argument("out", help="output file: .png, .svg or .dot")
    p.add_argument("--rankdir", "-rankdir", default="LR", choices=["LR", "TB", "BT", "RL"])
    p.add_argument("--phase", "-phase", default="ALL", type=str.upper, choices=["TRAIN", "TEST", "ALL"])
    p.add_argument("--lenient", action="store_true", help="skip fields a Caffe fork added, with a warning")

    p = verb("log", None, "training logs (ours or Caffe's): CSV tables and plots")
    lsub = p.add_subparsers(dest="log_verb", metavar="ACTION")
    d = lsub.add_parser("parse", help="LOG -> <LOG>.train.csv and <LOG>.test.csv, like parse_log.py")
    d.set_defaults(fn=cmd_log_parse)
    d.add_argument("log")
    d.add_argument("out_dir", nargs="?", help="where the CSV files go (default: the log's folder)")
    d = lsub.add_parser("plot", help="plot loss / accuracy / learning rate against iterations or seconds (PNG)")
    d.set_defaults(fn=cmd_log_plot)
    d.add_argument("log")
    d.add_argument("out", help="PNG file to write")
    d.add_argument("--x", default="iters", choices=["iters", "seconds"])
    d.add_argument("--y", nargs="+", help="output names (loss, accuracy...) and/or lr; default: all")

    p = verb("features", cmd_features, "save blobs of the TEST net over a dataset, like extract_features")
    _add(p, "model", required=True, help="net prototxt or YAML")
    _add(p, "weights", help="caffemodel(s), comma separated")
    _add(p, "blobs", required=True, help="blob names, comma separated")
    _add(p, "iterations", type=int, default=1, help="batches to run (default 1)")
    _add(p, "out", required=True, help="folder to write to")
    _add(p, "format", default="npy", choices=["npy", "lmdb"], help="one .npy or one LMDB per blob")

    p = verb("convert", cmd_convert, "convert a net or solver between prototxt and YAML (lossless)")
    p.add_argument("input")
    p.add_argument("output", help=".yaml/.yml for YAML, anything else for prototxt")

    p = verb("models", cmd_models, "list the model cards (models/*/model.yaml)")
    p.add_argument("--dir", default="models", help="the models folder (default: ./models)")

    p = verb("gradnorm", cmd_gradnorm, "print and plot ||dJ/dh_k||, k = T..1, for a recurrent layer: "
             "does the gradient vanish through time?")
    _add(p, "model", required=True, help="net prototxt or YAML")
    _add(p, "layer", required=True, help="name of an RNN, LSTM or GRU layer")
    _add(p, "weights", help="caffemodel(s), comma separated (default: freshly initialised)")
    _add(p, "out", help="PNG to plot to (log scale)")
    _add(p, "iterations", type=int, default=1, help="batches to average over (default 1)")
    _add(p, "phase", default="TEST", type=str.upper, choices=["TRAIN", "TEST"])
    p.add_argument("--grad", default="loss", choices=["loss", "random"],
                   help="gradient source: the net's loss (default) or a random unit direction on the last step")
    p.add_argument("--all-steps", action="store_true",
                   help="keep the loss's gradient at every output step (default: the last step's only)")
    p.add_argument("--lenient", action="store_true", help="skip fields a Caffe fork added, with a warning")

    p = verb("summary", cmd_summary, "per layer: top shape, neurons, trainable parameters, connections")
    _add(p, "model", required=True, help="net prototxt or YAML")
    _add(p, "weights", help="caffemodel(s), comma separated (used by --activations)")
    p.add_argument("--activations", action="store_true", help="run one forward batch and add each layer's top "
                   "activation mean and std (Input tops get N(0, 1) data)")
    _add(p, "phase", default="TRAIN", type=str.upper, choices=["TRAIN", "TEST"])
    _add(p, "level", type=int, default=None)
    _add(p, "stage")
    p.add_argument("--lenient", action="store_true", help="skip fields a Caffe fork added, with a warning")

    p = verb("rbm", None, "restricted Boltzmann machines")
    rsub = p.add_subparsers(dest="rbm_verb", metavar="ACTION")
    d = rsub.add_parser("show", help="PNG pictures of an RBM: filters, data vs reconstructions, Gibbs samples")
    d.set_defaults(fn=cmd_rbm_show)
    _add(d, "model", required=True, help="a net with an RBM layer (e.g. models/rbm/deploy.prototxt)")
    _add(d, "weights", required=True, help="caffemodel(s), comma separated")
    _add(d, "out", required=True, help="folder for filters.png, reconstructions.png, samples.png")
    _add(d, "data", help="LMDB of digits for reconstructions.png and the chains' starts (default: none; the "
         "chains start from random vectors)")
    _add(d, "layer", help="the RBM layer's name (default: the net's only RBM layer)")
    _add(d, "scale", type=float, default=0.00390625, help="data values -> [0, 1] (default 1/256, as training)")
    d.add_argument("--filters", type=_positive, default=100, help="filters to draw (default 100)")
    d.add_argument("--digits", type=_positive, default=40, help="digits to reconstruct (default 40)")
    d.add_argument("--chains", type=_positive, default=10, help="Gibbs chains, one per row (default 10)")
    d.add_argument("--columns", type=_positive, default=10, help="pictures per chain (default 10)")
    d.add_argument("--steps", type=_positive, default=50, help="Gibbs sweeps between pictures (default 50)")
    d.add_argument("--seed", type=int, default=0, help="seed of the Gibbs chains (default 0)")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    from .errors import PliteError
    from .log import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "fn", None) is None:
        parser.print_help()
        return 2
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    lenient_before = None
    if getattr(args, "lenient", False):
        from .io.prototxt import set_lenient

        lenient_before = set_lenient(True)
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
    finally:
        if lenient_before is not None:
            from .io.prototxt import set_lenient

            set_lenient(lenient_before)


if __name__ == "__main__":
    sys.exit(main())

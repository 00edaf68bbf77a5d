"""pycaffe_lite against PyTorch (CPU), side by side, printed as Markdown tables.

    python benchmarks/peers.py                    # everything, about 2-3 minutes
    python benchmarks/peers.py --quick            # a smoke run of under a minute (fewer, shorter rounds)
    python benchmarks/peers.py --sections memory --long   # RSS after 1,000 vs 10,000 iterations
    python benchmarks/peers.py --sections train,layers --threads 1

PyTorch is a peer, never a dependency: make it importable (``pip install torch==2.13.0``, the
CPU wheel, or a PYTHONPATH that holds it); without it its columns read "-" and a line says so.
BVLC Caffe is not measured here (issue 5 quotes its figures on this machine: 66-69 ms per LeNet
forward-backward with Debian's OpenBLAS, 32-36 ms with an AVX-512 one).

How it measures.  Each framework runs in its own worker process (so each keeps its own thread
settings: ours sets OMP_WAIT_POLICY=passive, PyTorch keeps its defaults), and this process asks
them in turn, A B B A ..., to time a case: one round is ``reps`` back-to-back calls (``reps``
chosen so that a round lasts ``--round-s`` seconds), and the figure is the median over rounds;
the ratio column is the median of the per-round ratios ours/PyTorch, which holds up when the
machine's speed drifts.  Both sides build their nets from the same prototxt: LeNet (models/lenet,
batch 64) and CIFAR-10 "quick" (batch 100) with Input layers fed random data, and CaffeNet's
deploy net (tests/conformance/zoo, batch 10) with random weights.

Sections (``--sections``, comma-separated; default all):
  train    LeNet train iteration: forward + backward + SGD momentum update (goal <= 0.7x PyTorch)
  layers   per layer forward and backward, LeNet and CIFAR-10 quick shapes (goal <= 1.2x)
  deploy   CaffeNet forward, batch 10
  scaling  LeNet train iteration at batch 16..256 (ms per image: flat means linear)
  threads  1 vs 2 threads, back to back in each round (goal >= 1.6x for conv-heavy nets)
  memory   peak RSS while training LeNet vs the bytes the net needs; RSS growth over iterations
  startup  ``plite train`` to its first iteration, kernels cached and cold; compile time per kernel
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's pycaffe_lite, in the workers too
SECTIONS = ("train", "layers", "deploy", "scaling", "threads", "memory", "startup")
CAFFENET = os.path.join(ROOT, "tests", "conformance", "zoo", "caffenet_deploy.prototxt")
LENET_SOLVER = os.path.join(ROOT, "models", "lenet", "lenet_solver.prototxt")
LENET_TRAIN_TEST = os.path.join(ROOT, "models", "lenet", "lenet_train_test.prototxt")
# Caffe's MNIST solver: SGD, momentum 0.9, weight decay 5e-4, "inv" decay.
SGD_SOLVER = ('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 '
              'power: 0.75 max_iter: 1000000000 display: 0 snapshot: 0 random_seed: 1')


# ---------------------------------------------------------------------------- the nets
def _input(batch: int, c: int, h: int, w: int) -> str:
    return (f'layer {{ name: "data" type: "Input" top: "data" top: "label" input_param {{ '
            f'shape {{ dim: {batch} dim: {c} dim: {h} dim: {w} }} shape {{ dim: {batch} }} }} }}\n')


def _conv(name, bottom, n, k, pad=0, stride=1):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} stride: {stride} '
            f'weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }} }}\n')


def _pool(name, bottom, method, k, s):
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
            f'pooling_param {{ pool: {method} kernel_size: {k} stride: {s} }} }}\n')


def _relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def _ip(name, bottom, n):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
            f'inner_product_param {{ num_output: {n} weight_filler {{ type: "xavier" }} '
            f'bias_filler {{ type: "constant" }} }} }}\n')


def _loss(bottom):
    return f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{bottom}" bottom: "label" top: "loss" }}\n'


def lenet(batch: int) -> str:
    """models/lenet's train net with an Input layer in place of the MNIST Data layer."""
    return ('name: "LeNet"\n' + _input(batch, 1, 28, 28) + _conv("conv1", "data", 20, 5)
            + _pool("pool1", "conv1", "MAX", 2, 2) + _conv("conv2", "pool1", 50, 5)
            + _pool("pool2", "conv2", "MAX", 2, 2) + _ip("ip1", "pool2", 500) + _relu("relu1", "ip1")
            + _ip("ip2", "ip1", 10) + _loss("ip2"))


def cifar10_quick(batch: int) -> str:
    """Caffe's examples/cifar10/cifar10_quick_train_test.prototxt with an Input layer."""
    return ('name: "CIFAR10_quick"\n' + _input(batch, 3, 32, 32) + _conv("conv1", "data", 32, 5, 2)
            + _pool("pool1", "conv1", "MAX", 3, 2) + _relu("relu1", "pool1")
            + _conv("conv2", "pool1", 32, 5, 2) + _relu("relu2", "conv2") + _pool("pool2", "conv2", "AVE", 3, 2)
            + _conv("conv3", "pool2", 64, 5, 2) + _relu("relu3", "conv3") + _pool("pool3", "conv3", "AVE", 3, 2)
            + _ip("ip1", "pool3", 64) + _ip("ip2", "ip1", 10) + _loss("ip2"))


def caffenet_deploy(batch: int) -> str:
    with open(CAFFENET) as f:
        text = f.read()
    return text.replace("dim: 10\n", f"dim: {batch}\n", 1)


NETS = {"lenet": lenet, "cifar10_quick": cifar10_quick, "caffenet": caffenet_deploy}


# ---------------------------------------------------------------------------- workers
def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Timed:
    """What a worker keeps per built case: callables by name."""

    def __init__(self) -> None:
        self.fns: dict = {}
        self.info: dict = {}


def _time_calls(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3


class PliteWorker:
    """pycaffe_lite's side."""

    name = "pycaffe_lite"

    def __init__(self) -> None:
        import importlib

        # pycaffe_lite first: its thread settings (idle OpenBLAS/OpenMP threads sleep) must be in
        # place before NumPy loads BLAS (an import statement would be sorted after numpy's)
        importlib.import_module("pycaffe_lite")
        import logging

        import numba
        import numpy as np
        import threadpoolctl

        logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
        self.np, self.numba, self.threadpoolctl = np, numba, threadpoolctl
        self.cases: dict[str, _Timed] = {}
        self.threads = None
        blas = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        self.versions = {"numpy": np.__version__, "numba": numba.__version__,
                         "blas": f"{blas[0]['internal_api']} {blas[0]['version']}" if blas else "?",
                         "blas_core": blas[0].get("architecture", "?") if blas else "?"}

    def set_threads(self, n: int) -> None:
        if n != self.threads:
            self.numba.set_num_threads(n)
            self.threadpoolctl.threadpool_limits(limits=n, user_api="blas")
            self.threads = n

    def _feed(self, net, classes: int) -> None:
        rng = self.np.random.default_rng(0)
        for name in net.inputs:
            blob = net.blobs[name]
            if name == "label":
                blob.data[...] = rng.integers(0, classes, blob.shape)
            else:
                blob.data[...] = rng.standard_normal(blob.shape, dtype=self.np.float32)

    def build(self, key: str, net_text: str, mode: str) -> dict:
        from pycaffe_lite import TEST, TRAIN, Net, SGDSolver

        case = _Timed()
        net = Net(net_text, phase=TEST if mode == "deploy" else TRAIN)
        if mode == "deploy":  # deploy prototxts may lack fillers: random weights, drawn fast
            rng = self.np.random.default_rng(0)
            for blobs in net.params.values():
                for b in blobs:
                    b.data[...] = rng.standard_normal(b.shape, dtype=self.np.float32) * self.np.float32(0.01)
        self._feed(net, 10)
        if mode == "train":
            solver = SGDSolver(SGD_SOLVER, train_net=net)
            case.fns["train"] = lambda: solver.step(1)
        elif mode == "deploy":
            case.fns["forward"] = lambda: net.forward()
        else:  # per layer
            net.forward_loss()
            net.backward()
            for li, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
                if layer.type == "Input":
                    continue
                bv, tv = net.bottom_vecs[li], net.top_vecs[li]
                case.fns[f"fwd:{name}"] = (lambda layer=layer, bv=bv, tv=tv: layer.run_forward(bv, tv))
                if net.layer_need_backward[li]:
                    pd = net.bottom_need_backward[li]
                    case.fns[f"bwd:{name}"] = (lambda layer=layer, bv=bv, tv=tv, pd=pd: layer.run_backward(tv, pd, bv))
        self.cases[key] = case
        return {"fns": list(case.fns)}

    def time(self, key: str, what: str, reps: int, threads: int) -> dict:
        self.set_threads(threads)
        return {"ms": _time_calls(self.cases[key].fns[what], reps)}


class TorchWorker:
    """PyTorch's side: the same prototxt turned into torch modules (Caffe's rounding kept:
    pooling with ceil_mode, AVE counting the padding)."""

    name = "PyTorch"

    def __init__(self) -> None:
        import torch  # first: its OpenMP runtime starts with PyTorch's own defaults

        self.torch = torch
        self.cases: dict[str, _Timed] = {}
        self.threads = None
        self.versions = {"torch": torch.__version__}

    def set_threads(self, n: int) -> None:
        if n != self.threads:
            self.torch.set_num_threads(n)
            self.threads = n

    def _stages(self, param):
        """[(name, type, module, bottoms, top)] and the Input blobs' shapes."""
        nn = self.torch.nn
        shapes, stages = {}, []
        for lp in param.layer:
            t = lp.type
            if t == "Input":
                for top, shp in zip(lp.top, lp.input_param.shape):
                    shapes[top] = tuple(shp.dim)
                continue
            if t in ("Convolution",):
                cp = lp.convolution_param
                k = cp.kernel_size[0]
                s = cp.stride[0] if cp.stride else 1
                p = cp.pad[0] if cp.pad else 0
                cin = shapes[lp.bottom[0]][1]
                m = nn.Conv2d(cin, cp.num_output, k, s, p, groups=cp.group, bias=cp.bias_term)
            elif t == "Pooling":
                pp = lp.pooling_param
                k = shapes[lp.bottom[0]][2:] if pp.global_pooling else pp.kernel_size
                if pp.pool == 0:
                    m = nn.MaxPool2d(k, pp.stride, pp.pad, ceil_mode=True)
                else:
                    m = nn.AvgPool2d(k, pp.stride, pp.pad, ceil_mode=True, count_include_pad=True)
            elif t == "ReLU":
                m = nn.ReLU()
            elif t == "LRN":
                q = lp.lrn_param
                m = nn.LocalResponseNorm(q.local_size, q.alpha, q.beta, q.k)
            elif t == "InnerProduct":
                q = lp.inner_product_param
                shp = shapes[lp.bottom[0]]
                m = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shp[1:]), q.num_output, bias=q.bias_term))
            elif t == "Dropout":
                m = nn.Dropout(lp.dropout_param.dropout_ratio)
            elif t == "Softmax":
                m = nn.Softmax(dim=1)
            elif t == "SoftmaxWithLoss":
                m = nn.CrossEntropyLoss()
            else:
                raise ValueError(f"layer type {t} has no PyTorch counterpart here")
            with self.torch.no_grad():
                ins = [self.torch.zeros(shapes[b]) if b != "label" else self.torch.zeros(shapes[b], dtype=self.torch.long)
                       for b in lp.bottom]
                shapes[lp.top[0]] = tuple(m(*ins).shape)
            stages.append((lp.name, t, m, list(lp.bottom), lp.top[0]))
        return stages, shapes

    def build(self, key: str, net_text: str, mode: str) -> dict:
        from pycaffe_lite.io.prototxt import read_net

        torch = self.torch
        torch.manual_seed(0)
        stages, shapes = self._stages(read_net(net_text).param)
        model = torch.nn.ModuleList([m for _, _, m, _, _ in stages])
        feeds = {name: (torch.randint(0, 10, shp) if name == "label" else torch.randn(shp))
                 for name, shp in shapes.items() if name in ("data", "label")}

        def run():
            blobs = dict(feeds)
            for _, _, m, bottoms, top in stages:
                blobs[top] = m(*[blobs[b] for b in bottoms])
            return blobs

        case = _Timed()
        if mode == "train":
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            top = stages[-1][4]

            def step():
                opt.zero_grad()
                run()[top].backward()
                opt.step()

            case.fns["train"] = step
        elif mode == "deploy":
            model.eval()

            def infer():
                with torch.no_grad():
                    run()

            case.fns["forward"] = infer
        else:
            model.train()
            with torch.no_grad():
                blobs = run()
            for name, _, m, bottoms, top in stages:
                ins = [blobs[b].detach().clone().requires_grad_(b not in feeds) if b != "label" else blobs[b]
                       for b in bottoms]
                case.fns[f"fwd:{name}"] = (lambda m=m, ins=ins: m(*ins))
                targets = [x for x in ins if x.requires_grad] + list(m.parameters())
                if targets:
                    y = m(*ins)
                    dy = torch.ones_like(y) if y.dim() == 0 else torch.randn_like(y)
                    case.fns[f"bwd:{name}"] = (lambda y=y, t=targets, dy=dy:
                                               torch.autograd.grad(y, t, dy, retain_graph=True))
        self.cases[key] = case
        return {"fns": list(case.fns)}

    def time(self, key: str, what: str, reps: int, threads: int) -> dict:
        self.set_threads(threads)
        return {"ms": _time_calls(self.cases[key].fns[what], reps)}


def worker_main(kind: str) -> int:
    """Serve JSON requests, one a line on stdin, one reply a line on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the pipe
    try:
        w = PliteWorker() if kind == "plite" else TorchWorker()
    except ImportError as e:
        out.write(json.dumps({"missing": str(e)}) + "\n")
        out.flush()
        return 0
    out.write(json.dumps({"ready": w.name, "versions": w.versions}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        if op == "quit":
            break
        try:
            reply = getattr(w, op)(**req)
        except Exception as e:  # noqa: BLE001  (reported to the driver, which names the case)
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


class Worker:
    """The driver's handle on a worker process."""

    def __init__(self, kind: str) -> None:
        env = dict(os.environ)
        # The benchmark sets the thread counts itself; training's busy-machine guard
        # (pycaffe_lite/_threads.py) would count the other framework's threads, still running as a
        # round hands over, as a busy machine and hold BLAS to one thread in our next rounds
        # (LeNet's 2-thread iteration read 5.5 instead of 4.8 ms in one process with it on).
        env.setdefault("PLITE_ADAPT_THREADS", "0")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", kind],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        hello = json.loads(self.proc.stdout.readline() or '{"missing": "the worker died"}')
        self.missing = hello.get("missing")
        self.name = hello.get("ready", kind)
        self.versions = hello.get("versions", {})
        self.built: set[str] = set()

    def call(self, op: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} worker died during {op} {kw.get('key', '')}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker, {op} {kw.get('key', '')} {kw.get('what', '')}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=30)


# ---------------------------------------------------------------------------- the driver
class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.ours = Worker("plite")
        if self.ours.missing:
            raise SystemExit(f"pycaffe_lite cannot be imported: {self.ours.missing}")
        self.peer = None
        if args.no_torch:
            print("PyTorch: skipped (--no-torch)")
        else:
            peer = Worker("torch")
            if peer.missing:
                print(f"PyTorch is not installed ({peer.missing}): skipping the peer; "
                      "`pip install torch==2.13.0` (CPU) to compare")
                peer.close()
            else:
                self.peer = peer

    def close(self) -> None:
        for w in (self.ours, self.peer):
            if w is not None:
                w.close()

    def _ensure(self, w: Worker, key: str, net: str, batch: int, mode: str) -> list[str]:
        if key not in w.built:
            reply = w.call("build", key=key, net_text=NETS[net](batch), mode=mode)
            w.built.add(key)
            setattr(w, f"fns_{key}", reply["fns"])
        return getattr(w, f"fns_{key}")

    def measure(self, net: str, batch: int, mode: str, what: str, threads: int) -> tuple:
        """(ours ms, peer ms or None, median paired ratio or None)."""
        key = f"{net}:{batch}:{mode}"
        workers = [w for w in (self.ours, self.peer) if w is not None]
        for w in workers:
            self._ensure(w, key, net, batch, mode)
        reps = {}
        for w in workers:  # warm up, then size a round to --round-s
            w.call("time", key=key, what=what, reps=1, threads=threads)
            t = min(w.call("time", key=key, what=what, reps=1, threads=threads)["ms"] for _ in range(2))
            reps[w] = max(1, min(2000, round(self.args.round_s * 1e3 / max(t, 1e-3))))
        times = {w: [] for w in workers}
        for r in range(self.args.rounds):
            order = workers if r % 2 == 0 else workers[::-1]
            for w in order:
                times[w].append(w.call("time", key=key, what=what, reps=reps[w], threads=threads)["ms"])
        ours = statistics.median(times[self.ours])
        if self.peer is None:
            return ours, None, None
        peer = statistics.median(times[self.peer])
        ratio = statistics.median(a / b for a, b in zip(times[self.ours], times[self.peer]))
        return ours, peer, ratio


    def speedup(self, net: str, batch: int, mode: str, what: str) -> dict:
        """Per framework: (1-thread ms, 2-thread ms, median of the per-round ratios 1 thr / 2 thr).
        Within a round each framework runs at 1 and at 2 threads back to back (the order flips
        every round), so a drift of the machine's speed moves both sides of a ratio alike."""
        key = f"{net}:{batch}:{mode}"
        workers = [w for w in (self.ours, self.peer) if w is not None]
        for w in workers:
            self._ensure(w, key, net, batch, mode)
        reps = {}
        for w in workers:
            for th in (1, 2):
                w.call("time", key=key, what=what, reps=1, threads=th)
                t = min(w.call("time", key=key, what=what, reps=1, threads=th)["ms"] for _ in range(2))
                reps[w, th] = max(1, min(2000, round(self.args.round_s * 1e3 / max(t, 1e-3))))
        times = {(w, th): [] for w in workers for th in (1, 2)}
        for r in range(self.args.rounds):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                for th in ((1, 2) if r % 2 == 0 else (2, 1)):
                    times[w, th].append(w.call("time", key=key, what=what, reps=reps[w, th], threads=th)["ms"])
        return {w: (statistics.median(times[w, 1]), statistics.median(times[w, 2]),
                    statistics.median(a / b for a, b in zip(times[w, 1], times[w, 2]))) for w in workers}


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _verdict(ratio, goal, le=True) -> str:
    if ratio is None:
        return "-"
    return "yes" if (ratio <= goal if le else ratio >= goal) else "no"


def section_train(b: Bench, out: list) -> None:
    a = b.args
    ours, peer, ratio = b.measure("lenet", a.batch, "train", "train", a.threads)
    out += ["### LeNet train iteration (forward + backward + SGD momentum update)", "",
            "| batch | threads | pycaffe_lite ms | PyTorch ms | ours/PyTorch | goal <= 0.7 |",
            "|---:|---:|---:|---:|---:|:--|",
            f"| {a.batch} | {a.threads} | {_f(ours)} | {_f(peer)} | {_f(ratio)} | {_verdict(ratio, 0.7)} |", ""]


def section_layers(b: Bench, out: list) -> None:
    a = b.args
    out += ["### Per layer (forward and backward separately)", "",
            ("Caffe is not installed here; issue 5 quotes BVLC Caffe at 32-36 ms (AVX-512 OpenBLAS) and "
             "66-69 ms (Debian OpenBLAS) per LeNet forward-backward, so PyTorch is the better peer."), "",
            "| net (batch) | layer | pass | pycaffe_lite ms | PyTorch ms | ours/PyTorch | goal <= 1.2 |",
            "|:--|:--|:--|---:|---:|---:|:--|"]
    for net, batch in (("lenet", a.batch), ("cifar10_quick", a.cifar_batch)):
        key = f"{net}:{batch}:layers"
        fns = b._ensure(b.ours, key, net, batch, "layers")  # in net order: fwd/bwd per layer
        peer_fns = set(b._ensure(b.peer, key, net, batch, "layers")) if b.peer is not None else set(fns)
        for what in fns:
            if what not in peer_fns:
                continue
            ours, peer, ratio = b.measure(net, batch, "layers", what, a.threads)
            pas, layer = what.split(":")
            out.append(f"| {net} ({batch}) | {layer} | {'forward' if pas == 'fwd' else 'backward'} | "
                       f"{_f(ours, '{:.3f}')} | {_f(peer, '{:.3f}')} | {_f(ratio)} | {_verdict(ratio, 1.2)} |")
    out.append("")


def section_deploy(b: Bench, out: list) -> None:
    a = b.args
    ours, peer, ratio = b.measure("caffenet", a.deploy_batch, "deploy", "forward", a.threads)
    ips = None if ours is None else a.deploy_batch / ours * 1e3
    out += ["### CaffeNet deploy forward (random weights)", "",
            "| batch | threads | pycaffe_lite ms | images/s | PyTorch ms | ours/PyTorch | goal <= 1.2 |",
            "|---:|---:|---:|---:|---:|---:|:--|",
            (f"| {a.deploy_batch} | {a.threads} | {_f(ours, '{:.1f}')} | {_f(ips, '{:.0f}')} | "
             f"{_f(peer, '{:.1f}')} | {_f(ratio)} | {_verdict(ratio, 1.2)} |"), ""]


def section_scaling(b: Bench, out: list) -> None:
    a = b.args
    out += ["### Scaling with batch size (LeNet train iteration)", "",
            "| batch | pycaffe_lite ms | ms/image | vs batch 64 per image | PyTorch ms | PyTorch ms/image | ours/PyTorch |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    rows = []
    for batch in a.scaling_batches:
        rows.append((batch, *b.measure("lenet", batch, "train", "train", a.threads)))
    ref = {bt: o / bt for bt, o, _, _ in rows}
    base = ref.get(64, statistics.median(ref.values()))
    for batch, ours, peer, ratio in rows:
        out.append(f"| {batch} | {_f(ours)} | {_f(ours / batch, '{:.4f}')} | {_f(ref[batch] / base)} | {_f(peer)} | "
                   f"{_f(None if peer is None else peer / batch, '{:.4f}')} | {_f(ratio)} |")
    out.append("")


def section_threads(b: Bench, out: list) -> None:
    a = b.args
    out += ["### Threads: 1 vs 2", "",
            "| case | pycaffe_lite 1 thr ms | 2 thr ms | speed-up | PyTorch 1 thr ms | 2 thr ms | speed-up | goal >= 1.6 |",
            "|:--|---:|---:|---:|---:|---:|---:|:--|"]
    cases = [(f"LeNet train, batch {a.batch}", "lenet", a.batch, "train", "train"),
             (f"CIFAR-10 quick train, batch {a.cifar_batch}", "cifar10_quick", a.cifar_batch, "train", "train"),
             (f"CaffeNet forward, batch {a.deploy_batch}", "caffenet", a.deploy_batch, "deploy", "forward")]
    for label, net, batch, mode, what in cases:
        res = b.speedup(net, batch, mode, what)
        o1, o2, so = res[b.ours]
        p1, p2, sp = res[b.peer] if b.peer is not None else (None, None, None)
        out.append(f"| {label} | {_f(o1)} | {_f(o2)} | {_f(so)} | {_f(p1)} | {_f(p2)} | {_f(sp)} | "
                   f"{_verdict(so, 1.6, le=False)} |")
    out += ["", "(speed-up: the median of per-round ratios; each round runs 1 and 2 threads back to back)", ""]


# ---------------------------------------------------------------------------- memory
def _lenet_solver_param(max_iter: int, batch_size: int | None = None):
    """models/lenet's solver, no snapshots or display; its Data layers' batch size changed if given.
    The test net runs as in `plite train` (at iteration 0 and every test_interval)."""
    from pycaffe_lite.io.prototxt import read_net
    from pycaffe_lite.solvers.solver import load_solver_param

    param, _ = load_solver_param(LENET_SOLVER)
    net = read_net(LENET_TRAIN_TEST).param
    for lp in net.layer:
        if lp.type == "Data" and batch_size:
            lp.data_param.batch_size = batch_size
    param.ClearField("net")
    param.net_param.CopyFrom(net)
    param.display = 0
    param.snapshot = 0
    param.max_iter = max_iter
    if batch_size:
        del param.test_iter[:]
        param.test_iter.append(1)
    return param


def memory_main(iters: list[int]) -> int:
    """Train LeNet (models/lenet, the bundled MNIST LMDB) and report RSS; prints one JSON line."""
    import gc
    import importlib
    import logging

    pycaffe_lite = importlib.import_module("pycaffe_lite")  # first: its thread settings precede BLAS's load
    import numpy as np

    os.chdir(ROOT)

    logging.getLogger("pycaffe_lite").setLevel(logging.WARNING)
    rss_import = _rss_mb()
    # Load (or compile) every kernel and code path LeNet's training uses (Data, Accuracy, the test
    # net) on a throwaway copy with batch size 2 (the smallest batch the convolutions split over two
    # threads, so their two-thread kernels load too), so that the baseline holds Python, NumPy, Numba
    # and the kernels but no LeNet-sized arrays.
    warm = pycaffe_lite.SGDSolver(_lenet_solver_param(max(iters), batch_size=2))
    warm.step(2)
    del warm
    gc.collect()
    baseline = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from here
        f.write("5")
    solver = pycaffe_lite.SGDSolver(_lenet_solver_param(max(iters)))
    nets = [solver.net, *solver.test_nets]
    seen: set[int] = set()
    need = 0
    train_params = {id(p) for p in solver.net.learnable_params}
    for k, net in enumerate(nets):
        for blob in net.blobs.values():
            if id(blob) not in seen:
                seen.add(id(blob))
                need += blob.data.nbytes * (2 if k == 0 else 1)  # the test net needs no gradients
        for blobs in net.params.values():
            for p in blobs:
                if id(p) not in seen:
                    seen.add(id(p))
                    need += p.data.nbytes * (2 if id(p) in train_params else 1)
    need += sum(h.data.nbytes for h in solver.history)
    dataset = 0
    for net in nets:
        for layer in net.layers:
            db = getattr(layer, "db", None)
            if db is not None and getattr(db, "cached", False):
                dataset += db.nbytes
    rss_at = {}
    done = 0
    for n in sorted(iters):
        solver.step(n - done)
        done = n
        rss_at[n] = _rss_mb()
    print(json.dumps({"rss_import": rss_import, "baseline": baseline, "peak": _rss_mb("VmHWM"), "need": need / 2**20,
                      "dataset": dataset / 2**20, "rss_at": rss_at, "numpy": np.__version__}))
    return 0


def section_memory(b: Bench | None, out: list, args) -> None:
    iters = [1000, 10000] if args.long else ([100, 300] if args.quick else [300, 1000])
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "memory",
                        "--memory-iters", ",".join(map(str, iters))],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    if r.returncode != 0:
        out += ["### Memory", "", f"memory run failed: {r.stderr.strip().splitlines()[-1:]}", ""]
        return
    m = json.loads(r.stdout.strip().splitlines()[-1])
    growth = m["peak"] - m["baseline"]
    need = m["need"] + m["dataset"]
    at = {int(k): v for k, v in m["rss_at"].items()}
    lo, hi = min(at), max(at)
    out += ["### Memory (training LeNet, batch 64, models/lenet with the bundled MNIST LMDB)", "",
            ("Baseline: RSS once Python, NumPy, Numba and the kernels are loaded (no LeNet arrays); "
             "growth: peak RSS during training (with its tests) minus the baseline; needed: blobs (data "
             "and diff of the train net, data of the test net), weights and their gradients, SGD history, "
             "plus the decoded data set held in memory."), "",
            ("| baseline MB | peak MB | growth MB | needed MB (net + data set) | growth/needed | goal <= 1.5 | "
             f"RSS at {lo} it MB | at {hi} it MB | drift MB |"),
            "|---:|---:|---:|---:|---:|:--|---:|---:|---:|",
            (f"| {m['baseline']:.1f} | {m['peak']:.1f} | {growth:.1f} | {need:.1f} ({m['need']:.1f} + "
             f"{m['dataset']:.1f}) | {growth / need:.2f} | {_verdict(growth / need, 1.5)} | {at[lo]:.1f} | "
             f"{at[hi]:.1f} | {at[hi] - at[lo]:+.1f} |"), "",
            f"({hi} iterations in {time.perf_counter() - t0:.0f} s, whole process.)", ""]


# ---------------------------------------------------------------------------- start-up
_PROBE = r"""
import sys, time, json
t_start = float(sys.argv[1])
from numba.core import event
stack, own = [], {}
class L(event.Listener):
    def on_start(self, ev):
        stack.append([time.perf_counter(), 0.0])
    def on_end(self, ev):
        t0, inner = stack.pop()
        dt = time.perf_counter() - t0
        if stack:
            stack[-1][1] += dt
        d = ev.data["dispatcher"]
        name = d.py_func.__module__.rsplit(".", 1)[-1] + "." + d.py_func.__name__
        own[name] = own.get(name, 0.0) + dt - inner
event.register("numba:compile", L())
from pycaffe_lite.cli import main
rc = main(sys.argv[2:])
sys.stderr.write("COMPILE " + json.dumps(own) + "\n")
sys.exit(rc)
"""


def _first_iteration(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """(seconds to the first 'Iteration 0' log line, whole-process seconds, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
    first = None
    lines = []
    for line in p.stderr:
        lines.append(line)
        if first is None and "Iteration 0," in line:
            first = time.perf_counter() - t0
    p.wait()
    return (first if first is not None else float("nan")), time.perf_counter() - t0, "".join(lines)


def section_startup(b: Bench | None, out: list, args) -> None:
    tmp = tempfile.mkdtemp(prefix="plite_startup_")
    solver = os.path.join(tmp, "solver.prototxt")
    with open(solver, "w") as f:
        f.write(f'net: "{LENET_TRAIN_TEST}"\nbase_lr: 0.01 momentum: 0.9 lr_policy: "fixed" display: 1 '
                'max_iter: 2 snapshot: 0 snapshot_after_train: false\n')
    plite = [sys.executable, "-m", "pycaffe_lite.cli", "train", "--solver", solver, "--no-progress"]
    env = dict(os.environ)
    try:
        cached_runs = [_first_iteration(plite, env) for _ in range(2 if args.quick else 3)]  # the 1st may fill the cache
        cached = statistics.median(r[0] for r in cached_runs[1:])
        cold_env = dict(env, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="cold_", dir=tmp))
        cold, _, _ = _first_iteration(plite, cold_env)
        probe_env = dict(env, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="probe_", dir=tmp))
        _, _, err = _first_iteration([sys.executable, "-c", _PROBE, str(time.time()), *plite[3:]], probe_env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    compile_s = {}
    for line in err.splitlines():
        if line.startswith("COMPILE "):
            compile_s = json.loads(line[8:])
    top = sorted(compile_s.items(), key=lambda kv: -kv[1])
    total = sum(compile_s.values())
    out += ["### Start-up: `plite train` (LeNet) to its first iteration", "",
            "| kernels | seconds to `Iteration 0` | goal |", "|:--|---:|:--|",
            f"| cached | {cached:.2f} | < 2 s: {'yes' if cached < 2 else 'no'} |",
            f"| cold (empty NUMBA_CACHE_DIR) | {cold:.2f} | < 30 s: {'yes' if cold < 30 else 'no'} |", "",
            (f"Compile time by kernel, cold (total {total:.1f} s over {len(top)} functions; "
             "own time, callees excluded):"), "",
            "| kernel | s |", "|:--|---:|"]
    out += [f"| {name} | {s:.2f} |" for name, s in top[: 6]]
    out.append("")


# ---------------------------------------------------------------------------- main
def _versions(b: Bench | None) -> list[str]:
    import platform

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    v = dict(b.ours.versions) if b is not None else {}
    if b is not None and b.peer is not None:
        v.update(b.peer.versions)
    return [(f"CPU: {cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}; "
             f"numpy {v.get('numpy', '?')}, numba {v.get('numba', '?')}, BLAS {v.get('blas', '?')} "
             f"(core {v.get('blas_core', '?')}); PyTorch {v.get('torch', 'not installed')}; "
             f"{time.strftime('%Y-%m-%d')}"), ""]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--quick", action="store_true", help="a smoke run: 3 short rounds per case")
    p.add_argument("--rounds", type=int, help="rounds per case (default 7, --quick 3)")
    p.add_argument("--round-s", type=float, help="seconds per round and side (default 0.15, --quick 0.03)")
    p.add_argument("--threads", type=int, default=2, help="threads for everything but the threads section")
    p.add_argument("--batch", type=int, default=64, help="LeNet batch (default 64)")
    p.add_argument("--cifar-batch", type=int, default=100, help="CIFAR-10 quick batch (default 100)")
    p.add_argument("--deploy-batch", type=int, default=10, help="CaffeNet batch (default 10)")
    p.add_argument("--scaling-batches", default="16,32,64,128,256")
    p.add_argument("--long", action="store_true", help="memory: RSS after 1,000 vs 10,000 iterations (~90 s)")
    p.add_argument("--no-torch", action="store_true", help="measure pycaffe_lite only")
    p.add_argument("--worker", choices=["plite", "torch", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--memory-iters", default="300,1000", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.rounds = a.rounds or (3 if a.quick else 7)
    a.round_s = a.round_s or (0.03 if a.quick else 0.15)
    a.scaling_batches = [int(x) for x in a.scaling_batches.split(",")]
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in a.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "memory":
        return memory_main([int(x) for x in args.memory_iters.split(",")])
    if args.worker:
        return worker_main(args.worker)
    t0 = time.perf_counter()
    timed = [s for s in args.sections if s not in ("memory", "startup")]
    b = Bench(args) if timed else None
    out = ["## pycaffe_lite vs PyTorch (CPU)", ""]
    try:
        out += _versions(b)
        for s in args.sections:
            print(f"... {s}", file=sys.stderr, flush=True)
            fn = globals()[f"section_{s}"]
            if s in ("memory", "startup"):
                fn(b, out, args)
            else:
                fn(b, out)
    finally:
        if b is not None:
            b.close()
    out.append(f"(ratios: median of per-round ratios, {args.rounds} alternating rounds per case; "
               f"whole run {time.perf_counter() - t0:.0f} s)")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

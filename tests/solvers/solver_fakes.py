"""A tiny stand-in for Net with the attributes a Solver uses, and hand-written references.

The fake net's loss is ``0.5 * c * sum_i ||w_i - t_i||^2`` with gradient ``c * (w_i - t_i)``;
``c`` cycles through ``scales`` on successive forward/backward passes (to test iter_size).
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from pycaffe_lite.blob import Blob
from pycaffe_lite.proto import caffe_pb2

SHAPES = ((3, 4), (5,))
LR_MULT = (1.0, 2.0)
DECAY_MULT = (1.0, 0.0)


class FakeNet:
    def __init__(self, shapes=SHAPES, lr_mult=LR_MULT, decay_mult=DECAY_MULT, seed=0, scales=(1.0,)):
        rng = np.random.default_rng(seed)
        self.name = "fake"
        self.learnable_params = []
        self.targets = []
        for i, s in enumerate(shapes):
            b = Blob(s, name=f"fake[{i}]")
            b.data[...] = rng.standard_normal(s)
            self.learnable_params.append(b)
            self.targets.append(rng.standard_normal(s).astype(np.float32))
        self.params_lr = list(lr_mult)
        self.params_weight_decay = list(decay_mult)
        self.learnable_param_names = [f"fake[{i}]" for i in range(len(shapes))]
        self.layers, self.layer_names = [], []
        self.blobs = OrderedDict(loss=Blob((), name="loss"))
        self.outputs = ["loss"]
        self.blob_loss_weights = {"loss": 1.0}
        self.scales = scales
        self.passes = 0

    @property
    def params(self):
        return OrderedDict(fake=self.learnable_params)

    def scale(self) -> float:
        return self.scales[self.passes % len(self.scales)]

    def forward_loss(self) -> float:
        c = self.scale()
        loss = sum(0.5 * c * float(np.sum((b.data.astype(np.float64) - t) ** 2))
                   for b, t in zip(self.learnable_params, self.targets))
        self.blobs["loss"].data[...] = loss
        return loss

    def backward(self) -> None:
        c = np.float32(self.scale())
        for b, t in zip(self.learnable_params, self.targets):
            b.diff[...] += c * (b.data - t)
        self.passes += 1

    def forward_backward(self) -> float:
        loss = self.forward_loss()
        self.backward()
        return loss

    def clear_param_diffs(self) -> None:
        for b in self.learnable_params:
            b.diff[...] = 0

    def update(self) -> None:
        for b in self.learnable_params:
            b.update()

    def first_nonfinite(self):
        return None

    def to_proto(self, write_diff=False):
        p = caffe_pb2.NetParameter(name=self.name)
        lp = p.layer.add(name="fake", type="Fake")
        for b in self.learnable_params:
            b.to_proto(lp.blobs.add(), write_diff=write_diff)
        return p

    def copy_from(self, source) -> None:
        from pycaffe_lite.io.caffemodel import read_message

        p = read_message(source, caffe_pb2.NetParameter(), "caffemodel") if isinstance(source, str) else source
        for b, bp in zip(self.learnable_params, p.layer[0].blobs):
            b.data[...] = np.asarray(bp.data, np.float32).reshape(b.shape)

    def weights(self):
        return [b.data.copy() for b in self.learnable_params]


def solver_param(text: str) -> caffe_pb2.SolverParameter:
    from google.protobuf import text_format

    return text_format.Parse(text, caffe_pb2.SolverParameter())


# ---------------------------------------------------------------- references (float64 NumPy)
def reference_run(rule: str, net: FakeNet, p, steps: int):
    """Apply ``steps`` updates of ``rule`` to copies of the fake net's weights, by the formulas."""
    w = [b.data.astype(np.float64) for b in net.learnable_params]
    t = [x.astype(np.float64) for x in net.targets]
    n = len(w)
    h = [np.zeros_like(x) for x in w]
    h2 = [np.zeros_like(x) for x in w]
    scales = net.scales
    passes = 0
    for it in range(steps):
        rate = p.base_lr  # fixed policy in these tests
        g = [np.zeros_like(x) for x in w]
        for _ in range(p.iter_size):
            c = scales[passes % len(scales)]
            passes += 1
            for i in range(n):
                g[i] += c * (w[i] - t[i])
        if p.clip_gradients >= 0:
            norm = np.sqrt(sum(np.sum(x * x) for x in g))
            if norm > p.clip_gradients:
                g = [x * (p.clip_gradients / norm) for x in g]
        for i in range(n):
            g[i] = g[i] / p.iter_size
            decay = p.weight_decay * net.params_weight_decay[i]
            if p.regularization_type == "L2":
                g[i] = g[i] + decay * w[i]
            else:
                g[i] = g[i] + decay * np.sign(w[i])
            lr = rate * net.params_lr[i]
            mu, d = p.momentum, p.delta
            if rule == "SGD":
                h[i] = mu * h[i] + lr * g[i]
                step = h[i]
            elif rule == "Nesterov":
                old = h[i].copy()
                h[i] = mu * h[i] + lr * g[i]
                step = (1 + mu) * h[i] - mu * old
            elif rule == "AdaGrad":
                h[i] = h[i] + g[i] ** 2
                step = lr * g[i] / (np.sqrt(h[i]) + d)
            elif rule == "RMSProp":
                r = p.rms_decay
                h[i] = r * h[i] + (1 - r) * g[i] ** 2
                step = lr * g[i] / (np.sqrt(h[i]) + d)
            elif rule == "AdaDelta":
                h[i] = mu * h[i] + (1 - mu) * g[i] ** 2
                u = g[i] * np.sqrt(h2[i] + d) / np.sqrt(h[i] + d)
                h2[i] = mu * h2[i] + (1 - mu) * u ** 2
                step = lr * u
            elif rule == "Adam":
                b1, b2, k = mu, p.momentum2, it + 1
                h[i] = b1 * h[i] + (1 - b1) * g[i]
                h2[i] = b2 * h2[i] + (1 - b2) * g[i] ** 2
                step = lr * np.sqrt(1 - b2 ** k) / (1 - b1 ** k) * h[i] / (np.sqrt(h2[i]) + d)
            else:
                raise ValueError(rule)
            w[i] = w[i] - step
    return w, h + (h2 if rule in ("AdaDelta", "Adam") else [])

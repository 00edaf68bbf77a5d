"""`plite gradnorm`: how a gradient fades, or survives, as it flows back through time.

For a recurrent layer (RNN, LSTM, GRU) of a net, run the net forward, back-propagate the net's
loss down to the layer's output, keep only the last time step's share of that gradient
(``last_step_only``), and run the layer's backward through time, recording the gradient of the
loss with respect to each hidden state h_k, k = T .. 1.  Its norm shows the long-term-dependency
problem (Bengio, Simard & Frasconi 1994; Hochreiter & Schmidhuber 1997): in a tanh RNN,
dJ/dh_k = W^T diag(f'(a_{k+1})) dJ/dh_{k+1}, so when the Jacobians' norms stay below some gamma < 1
the gradient shrinks like gamma^(T-k); the LSTM's cell and the GRU's update gate let it pass.

The norm at step k is the Frobenius norm of dJ/dh_k over the batch (N streams x H units), J the
net's loss on the batch; over several batches (``iterations``) the norms are averaged.
``grad="random"`` replaces the loss by J = <v, y_T> with v a fixed random unit direction on the
layer's last output step (for nets without a loss, e.g. deploy nets).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .errors import NetConfigError, PliteError

log = logging.getLogger(__name__)


@dataclass
class HiddenGradNorms:
    """The result: ``norms[k - 1]`` = ||dJ/dh_k|| for k = 1 .. T (mean over batches)."""

    layer: str
    type: str
    norms: np.ndarray
    batches: int
    streams: int
    grad: str

    @property
    def T(self) -> int:
        return len(self.norms)

    def first_nonzero_step(self) -> int:
        """The smallest k with ||dJ/dh_k|| > 0 (earlier steps' gradients underflowed to 0 in
        float32, or a cont of 0 cut them off); T + 1 when every norm is 0."""
        nonzero = np.flatnonzero(self.norms > 0)
        return int(nonzero[0]) + 1 if nonzero.size else self.T + 1

    def ratio_per_step(self) -> float:
        """The geometric mean of ||dJ/dh_k|| / ||dJ/dh_{k+1}|| over k = k0 .. T-1, i.e.
        (||dJ/dh_k0|| / ||dJ/dh_T||)^(1/(T-k0)), k0 = :meth:`first_nonzero_step` (1 unless the
        gradient underflowed); nan when fewer than two steps have a nonzero gradient."""
        k0 = self.first_nonzero_step()
        last = float(self.norms[-1])
        if k0 >= self.T or last <= 0:
            return math.nan
        return (float(self.norms[k0 - 1]) / last) ** (1.0 / (self.T - k0))

    def format_table(self) -> str:
        """The printed report: one line per step k = T .. 1, then the mean ratio per step."""
        origin = "the net's loss" if self.grad == "loss" else "a random unit direction"
        lines = [
            (f"layer '{self.layer}' ({self.type}): T = {self.T}, {self.batches} batch(es) of {self.streams} streams; "
            f"gradient from {origin} at the last step"),
            f"{'k':>5}  {'||dJ/dh_k||':>12}  {'/ ||dJ/dh_T||':>14}",
        ]
        last = float(self.norms[-1])
        for k in range(self.T, 0, -1):
            v = float(self.norms[k - 1])
            rel = v / last if last > 0 else math.nan
            lines.append(f"{k:>5}  {v:>12.4e}  {rel:>14.4e}")
        k0 = self.first_nonzero_step()
        if k0 == 1:
            lines.append(f"mean ratio per step (||dJ/dh_1|| / ||dJ/dh_T||)^(1/(T-1)) = {self.ratio_per_step():.4g}")
        else:
            lines.append(f"||dJ/dh_k|| is 0 for k < {k0} (underflow in float32, or a sequence start)")
            lines.append(f"mean ratio per step (||dJ/dh_{k0}|| / ||dJ/dh_T||)^(1/(T-{k0})) = {self.ratio_per_step():.4g}")
        return "\n".join(lines)


def _recurrent_layer(net, name: str):
    from .layers.recurrent import RecurrentLayer

    recurrent = [n for n, layer in zip(net.layer_names, net.layers) if isinstance(layer, RecurrentLayer)]
    where = f"recurrent layers in net '{net.name}': {', '.join(recurrent) or 'none'}"
    if name not in net.layer_names:
        raise NetConfigError(f"net '{net.name}' has no layer named '{name}' ({where})")
    li = net.layer_names.index(name)
    layer = net.layers[li]
    if not isinstance(layer, RecurrentLayer):
        raise NetConfigError(
            f"layer '{name}' ({layer.type}) is not a recurrent layer (RNN, LSTM or GRU); {where}"
        )
    return li, layer


def hidden_grad_norms(net, layer_name: str, iterations: int = 1, grad: str = "loss",
                      last_step_only: bool = True, seed: int = 0) -> HiddenGradNorms:
    """Measure ||dJ/dh_k||, k = 1 .. T, for the recurrent layer ``layer_name`` of ``net``.

    Parameters
    ----------
    net : Net
        Any net holding the layer (its parameters are read, not changed; their diffs are).
    iterations : int
        Batches to average over (each forward reads the next batch).
    grad : "loss" or "random"
        Where the gradient comes from: the net's loss back-propagated to the layer's output, or
        a random unit direction on its last output step.
    last_step_only : bool
        With ``grad="loss"``, zero the gradient that reaches the output at steps 1 .. T-1, so
        the norms show one gradient travelling back from step T (the usual argument); False keeps
        every step's share.

    Raises
    ------
    NetConfigError
        When the layer is missing or not recurrent, or no gradient reaches it.
    """
    if iterations < 1:
        raise PliteError(f"--iterations must be at least 1, got {iterations}")
    if grad not in ("loss", "random"):
        raise PliteError(f"grad must be 'loss' or 'random', got {grad!r}")
    li, layer = _recurrent_layer(net, layer_name)
    top, bottom = net.top_vecs[li], net.bottom_vecs[li]
    rng = np.random.default_rng(seed)
    total = None
    try:
        for _ in range(iterations):
            if grad == "loss":
                net.forward_loss()
                for t in top:
                    t.diff[...] = 0
                if li + 1 < len(net.layers):
                    net._backward(end=li + 1)
                if last_step_only:
                    top[0].diff[:-1] = 0
                if not np.any(top[0].diff) and not any(np.any(t.diff) for t in top[1:]):
                    raise NetConfigError(
                        f"layer '{layer_name}' ({layer.type}): the net's loss sends no gradient to its output "
                        f"'{net.top_names[layer_name][0]}'{' at the last step' if last_step_only else ''}; "
                        f"use grad='random' (--grad random) for a net without a loss above this layer"
                    )
            else:
                net.forward_loss(0, li)
                for t in top:
                    t.diff[...] = 0
                v = rng.standard_normal(top[0].shape[1:]).astype(np.float32)
                top[0].diff[-1] = v / np.linalg.norm(v)
            T, N = layer.T, layer.N
            record = np.zeros((T, N, layer.H), np.float32)
            layer.record_hidden_diff = record
            layer.run_backward(top, [False] * len(bottom), bottom)
            norms = np.sqrt(np.einsum("tnh,tnh->t", record.astype(np.float64), record.astype(np.float64)))
            if total is None:
                total = norms
            elif len(norms) != len(total):
                raise NetConfigError(
                    f"layer '{layer_name}' ({layer.type}): T changed from {len(total)} to {len(norms)} between "
                    f"batches; give --iterations 1"
                )
            else:
                total += norms
    finally:
        layer.record_hidden_diff = None
    return HiddenGradNorms(layer_name, layer.type, total / iterations, iterations, layer.N, grad)


# ------------------------------------------------------------------------ plotting
def plot_grad_norms(results: list[HiddenGradNorms], out: str) -> str:
    """Plot ||dJ/dh_k|| against k (log scale) to a PNG: with matplotlib when it is installed
    (the ``plot`` extra), else with Pillow's drawing primitives.  Returns ``"matplotlib"`` or
    ``"pillow"``."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        _plot_pillow(results, out)
        return "pillow"
    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for r in results:
        k = np.arange(1, r.T + 1)
        keep = r.norms > 0
        ax.semilogy(k[keep], r.norms[keep], marker=".", label=f"{r.layer} ({r.type})")
    ax.set_xlabel("time step k")
    ax.set_ylabel("||dJ/dh_k||")
    ax.set_title("gradient of the loss w.r.t. the hidden state, from step T back to 1")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    return "matplotlib"


_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


def _plot_pillow(results: list[HiddenGradNorms], out: str) -> None:
    from PIL import Image, ImageDraw

    W, H, left, right, top, bottom = 700, 420, 70, 20, 30, 45
    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    positive = np.concatenate([r.norms[r.norms > 0] for r in results] or [np.ones(1)])
    if positive.size == 0:
        positive = np.ones(1)
    lo = math.floor(math.log10(positive.min()))
    hi = math.ceil(math.log10(positive.max()))
    hi = hi if hi > lo else lo + 1
    T = max(r.T for r in results)

    def xy(k: float, v: float) -> tuple[float, float]:
        x = left + (k - 1) / max(T - 1, 1) * (W - left - right)
        y = top + (hi - math.log10(v)) / (hi - lo) * (H - top - bottom)
        return x, y

    every = max(1, math.ceil((hi - lo) / 12))  # at most ~12 labelled decades
    for e in range(lo, hi + 1):  # decade grid lines, labelled every ``every``
        _, y = xy(1, 10.0 ** e)
        if (hi - e) % every == 0:
            draw.line([(left, y), (W - right, y)], fill=(215, 215, 215))
            draw.text((5, y - 6), f"1e{e}", fill="black")
    step = max(1, round(T / 10))
    for k in [*range(1, T + 1, step), T]:
        x, _ = xy(k, 10.0 ** hi)
        draw.line([(x, H - bottom), (x, H - bottom + 4)], fill="black")
        draw.text((x - 6, H - bottom + 6), str(k), fill="black")
    draw.rectangle([(left, top), (W - right, H - bottom)], outline="black")
    draw.text((left, 8), "||dJ/dh_k|| (log scale) against the time step k", fill="black")
    draw.text((W // 2 - 40, H - 18), "time step k", fill="black")
    for j, r in enumerate(results):
        color = _COLORS[j % len(_COLORS)]
        points = [xy(k, float(v)) for k, v in zip(range(1, r.T + 1), r.norms) if v > 0]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse([(x - 2, y - 2), (x + 2, y + 2)], fill=color)
        draw.text((W - right - 160, top + 8 + 14 * j), f"{r.layer} ({r.type})", fill=color)
    img.save(out, format="PNG")


def run_gradnorm(model: str, layer: str, weights: list[str] | None = None, out: str | None = None,
                 iterations: int = 1, phase: str = "TEST", grad: str = "loss",
                 all_steps: bool = False) -> HiddenGradNorms:
    """The verb: build the net, measure, print the table, write the plot when ``out`` is given."""
    from .layer import TEST, TRAIN
    from .net import Net

    net = Net(model, phase=TRAIN if phase == "TRAIN" else TEST, weights=weights)
    if not weights:
        log.warning("no --weights given: measuring randomly initialised parameters")
    result = hidden_grad_norms(net, layer, iterations=iterations, grad=grad, last_step_only=not all_steps)
    print(result.format_table())
    if out:
        how = plot_grad_norms([result], out)
        log.info("Wrote %s (%s)", out, how)
    return result

"""`plite summary`: one line per layer of a net, counted as LeCun et al. (1998) count LeNet-5.

Columns:

* **top shape** of each top (the batch included).
* **neurons**: the units the layer creates, per sample (a top's count over its first axis).
  Layers without bottoms (data, inputs), layers run in place (their units are the ones the
  producer of the blob created) and scalar tops (losses, accuracy) add none and show ``-``.
* **parameters**: the trainable elements of the layer's parameter blobs: blobs with
  ``lr_mult: 0`` (an RBF layer's fixed prototypes, BatchNorm's statistics) are shown apart
  as fixed, a parameter shared by name is counted at its first layer only, and a
  convolution with a connection table counts only its connected filters.
* **connections**: links per sample from an input to a unit, a bias counting as one link
  from a constant unit, which is how the paper counts them: a weighted layer's
  multiply-adds plus its bias additions (C1: 28*28 * 6 * (25 + 1) = 122,304). Pooling
  windows count their inputs. Layers without weights or windows (element-wise, data,
  loss) show ``-``. Rules per type are the small functions in :data:`CONNECTIONS`.

Split layers that the net inserts by itself are left out (they are plumbing, not layers
of the prototxt).

``--activations`` (:func:`activation_stats`) runs one forward batch, layer by layer, and adds the
mean and standard deviation of each layer's top(s) right after that layer ran (so a ReLU in place
shows its own output, not the convolution's): the quick check that activations neither vanish
nor explode through depth.  Input layers have no data of their own; their tops are filled with
N(0, 1) draws (seeded) first.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .layer import Layer


@dataclass
class LayerSummary:
    """One row of the table (counts per sample; None where a count does not apply)."""

    name: str
    type: str
    top_shapes: list[tuple[int, ...]]
    in_place: bool
    neurons: int | None
    parameters: int | None
    fixed_parameters: int
    connections: int | None
    #: (mean, std) of each top after one forward batch (``--activations``), else None
    activations: list[tuple[float, float]] | None = None


# ------------------------------------------------------------------ connections per type
def _spatial(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[2:], dtype=np.int64))


def _conv(layer, bottom, top) -> int:
    # each output unit links to its (connected) filter inputs and its bias; every top
    # (several bottoms share the weights) has its own units
    filters = _connected_weights(layer, 0, layer.blobs[0])
    biases = layer.blobs[1].count() if len(layer.blobs) > 1 else 0
    return sum(_spatial(t.shape) * (filters + biases) for t in top)


def _deconv(layer, bottom, top) -> int:
    # every input pixel is spread through the whole weight blob; each output unit adds a bias
    biases = layer.blobs[1].count() if len(layer.blobs) > 1 else 0
    return sum(_spatial(b.shape) * layer.blobs[0].count() + _spatial(t.shape) * biases for b, t in zip(bottom, top))


def _inner_product(layer, bottom, top) -> int:
    return top[0].count(1) * (layer.K + (1 if layer.bias_term else 0))


def _subsampling(layer, bottom, top) -> int:
    return top[0].count(1) * (layer.k * layer.k + 1)  # the window's inputs and the bias


def _pooling(layer, bottom, top) -> int:
    return top[0].count(1) * layer.kh * layer.kw


def _rbf(layer, bottom, top) -> int:
    return top[0].count(1) * layer.K


#: layer type -> connections per sample (layer, bottom blobs, top blobs) -> int
CONNECTIONS: dict[str, Callable[[Layer, list, list], int]] = {
    "Convolution": _conv,
    "Deconvolution": _deconv,
    "InnerProduct": _inner_product,
    "Subsampling": _subsampling,
    "Pooling": _pooling,
    "RBF": _rbf,
}


def _connected_weights(layer, index: int, blob) -> int:
    """Elements of parameter blob ``index`` that are real connections (a convolution's
    connection table leaves the other filters at zero for good)."""
    mask = getattr(layer, "connection_mask", None)
    if index == 0 and mask is not None:
        return int(mask.sum()) * int(np.prod(blob.shape[2:]))
    return blob.count()


# ------------------------------------------------------------------ the table
def _is_auto_split(layer, bottom_names: list[str], top_names: list[str]) -> bool:
    """A Split the net inserted (named ``<blob>_<layer>_<i>_split``, tops ``<that>_<k>``)."""
    name = layer.name
    return (layer.type == "Split" and len(bottom_names) == 1 and name.startswith(bottom_names[0] + "_")
            and name.endswith("_split") and top_names == [f"{name}_{k}" for k in range(len(top_names))])


def _lr_mult(layer, index: int) -> float:
    specs = layer.layer_param.param
    if index < len(specs) and specs[index].HasField("lr_mult"):
        return float(specs[index].lr_mult)
    return 1.0


def summarize(net, activations: bool = False) -> list[LayerSummary]:
    """The rows of :func:`format_summary` for a built :class:`pycaffe_lite.net.Net`
    (with ``activations``, each row also gets its tops' mean/std over one forward batch)."""
    stats = activation_stats(net) if activations else {}
    rows = []
    seen: set[int] = set()  # parameter storage already counted (shared parameters)
    for li, layer in enumerate(net.layers):
        bottom, top = net.bottom_vecs[li], net.top_vecs[li]
        bottom_names, top_names = net.bottom_name_vecs[li], net.top_name_vecs[li]
        if _is_auto_split(layer, bottom_names, top_names):
            continue
        in_place = [j < len(bottom_names) and bottom_names[j] == t for j, t in enumerate(top_names)]
        neurons = None
        if bottom:
            counted = [t.count(1) for t, same in zip(top, in_place) if not same and t.num_axes >= 1]
            neurons = sum(counted) if counted else None
        params = fixed = 0
        for j, blob in enumerate(layer.blobs):
            storage = blob.data.__array_interface__["data"][0]
            if storage in seen:
                continue
            seen.add(storage)
            n = _connected_weights(layer, j, blob)
            if _lr_mult(layer, j) == 0:
                fixed += n
            else:
                params += n
        rule = CONNECTIONS.get(layer.type)
        rows.append(LayerSummary(
            name=layer.name, type=layer.type, top_shapes=[t.shape for t in top], in_place=any(in_place),
            neurons=neurons, parameters=params if layer.blobs else None, fixed_parameters=fixed,
            connections=rule(layer, bottom, top) if rule is not None else None,
            activations=stats.get(layer.name) if activations else None,
        ))
    return rows


def activation_stats(net, seed: int = 0) -> dict[str, list[tuple[float, float]]]:
    """Run one forward batch layer by layer; ``{layer name: [(mean, std) of each top]}``.

    The tops of Input layers are first filled with N(0, 1) draws from ``seed``."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[float, float]]] = {}
    for li, layer in enumerate(net.layers):
        net.forward_loss(li, li)
        if layer.type == "Input":
            for t in net.top_vecs[li]:
                t.data[...] = rng.standard_normal(t.shape)
        out[layer.name] = [(float(t.data.mean(dtype=np.float64)), float(t.data.std(dtype=np.float64)))
                           for t in net.top_vecs[li]]
    return out


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def format_summary(rows: list[LayerSummary]) -> str:
    """A text table: layer, type, top shape, neurons, parameters, connections, and totals."""
    header: tuple[str, ...] = ("layer", "type", "top shape", "neurons", "parameters", "connections")
    stats = any(r.activations is not None for r in rows)
    if stats:
        header += ("act mean", "act std")
    lines = []
    for r in rows:
        shape = ", ".join(_shape(s) for s in r.top_shapes) + (" (in place)" if r.in_place else "")
        params = _n(r.parameters)
        if r.fixed_parameters:
            params += f" (+{r.fixed_parameters:,} fixed)"
        line: tuple[str, ...] = (r.name, r.type, shape, _n(r.neurons), params, _n(r.connections))
        if stats:
            acts = r.activations or []
            line += (", ".join(f"{m:.4g}" for m, _ in acts) or "-", ", ".join(f"{sd:.4g}" for _, sd in acts) or "-")
        lines.append(line)
    total: tuple[str, ...] = ("total", "", "", _n(sum(r.neurons or 0 for r in rows)),
                              _n(sum(r.parameters or 0 for r in rows)), _n(sum(r.connections or 0 for r in rows)))
    if stats:
        total += ("", "")
    widths = [max(len(row[i]) for row in [header, total, *lines]) for i in range(len(header))]

    def fmt(row) -> str:
        left = [row[i].ljust(widths[i]) for i in range(3)]
        right = [row[i].rjust(widths[i]) for i in range(3, len(header))]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, lines), rule, fmt(total)])

"""Net: build a DAG of layers from a NetParameter and run it forward and backward.

Build order (Caffe's Net::Init): filter layers by the net state (phase, level,
stages) -> insert Split layers where one blob feeds several layers -> create and
wire the layers (in-place tops reuse the bottom blob) -> set up each layer ->
share parameters by ``param { name }`` -> decide which layers need backward.
"""
from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

from .blob import Blob, proto_shape
from .errors import DataError, NetConfigError, PliteError, ShapeError, where
from .layer import TEST, TRAIN, Layer
from .registry import LAYERS


# ---------------------------------------------------------------------------- state
def state_meets_rule(state, rule) -> bool:
    """Caffe's StateMeetsRule: phase, level range, required stages and excluded stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def layer_included(state, layer_param) -> bool:
    if layer_param.include:
        return any(state_meets_rule(state, r) for r in layer_param.include)
    return not any(state_meets_rule(state, r) for r in layer_param.exclude)


def filter_net(param, lines: Sequence[int | None], filename: str | None):
    """Return (NetParameter with only the layers of ``param.state``, their lines)."""
    from .proto import caffe_pb2

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    kept_lines = []
    for i, lp in enumerate(param.layer):
        if lp.include and lp.exclude:
            raise NetConfigError(
                f"{where(filename, _line(lines, i))}layer '{lp.name}' ({lp.type}) has both include and "
                "exclude rules; use one of them"
            )
        if layer_included(param.state, lp):
            out.layer.add().CopyFrom(lp)
            kept_lines.append(_line(lines, i))
    return out, kept_lines


def _line(lines: Sequence[int | None], i: int) -> int | None:
    return lines[i] if i < len(lines) else None


# ---------------------------------------------------------------------------- splits
def split_layer_name(blob: str, layer: str, top_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(blob: str, layer: str, top_index: int, split_index: int) -> str:
    return f"{split_layer_name(blob, layer, top_index)}_{split_index}"


def _implicit_loss_weight(lp, top_index: int) -> float:
    if len(lp.loss_weight) > top_index:
        return lp.loss_weight[top_index]
    if not lp.loss_weight and top_index == 0 and lp.type in LAYERS:
        return 1.0 if getattr(LAYERS.get(lp.type), "is_loss", False) else 0.0
    return 0.0


def insert_splits(param, lines: Sequence[int | None]):
    """Give every blob read by more than one layer a Split layer (Caffe's InsertSplits).

    The split of top ``j`` of layer ``L`` producing blob ``b`` is named
    ``b_L_j_split`` and its tops ``b_L_j_split_<k>``; backward sums their diffs.
    A blob that carries a loss weight and is also read keeps the weight on split top 0.
    """
    from .proto import caffe_pb2

    producer: dict[str, tuple[int, int]] = {}
    consumers: dict[tuple[int, int], int] = {}
    bottom_source: dict[tuple[int, int], tuple[int, int]] = {}
    for i, lp in enumerate(param.layer):
        for j, b in enumerate(lp.bottom):
            if b not in producer:
                continue  # reported as a missing blob when the net is wired
            src = producer[b]
            bottom_source[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for j, t in enumerate(lp.top):
            producer[t] = (i, j)
    loss_weight = {}
    for i, lp in enumerate(param.layer):
        for j in range(len(lp.top)):
            w = _implicit_loss_weight(lp, j)
            if w:
                loss_weight[(i, j)] = w

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    out_lines: list[int | None] = []
    next_split: dict[tuple[int, int], int] = {}
    for i, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        out_lines.append(_line(lines, i))
        for j, b in enumerate(lp.bottom):
            src = bottom_source.get((i, j))
            if src is None:
                continue
            n = consumers[src] + (1 if src in loss_weight else 0)
            if n > 1:
                k = next_split.get(src, 1 if src in loss_weight else 0)
                next_split[src] = k + 1
                new.bottom[j] = split_blob_name(b, param.layer[src[0]].name, src[1], k)
        for j, t in enumerate(lp.top):
            src = (i, j)
            n = consumers.get(src, 0) + (1 if src in loss_weight else 0)
            if consumers.get(src, 0) and n > 1:
                split = out.layer.add()
                split.name = split_layer_name(t, lp.name, j)
                split.type = "Split"
                split.bottom.append(t)
                for k in range(n):
                    split.top.append(split_blob_name(t, lp.name, j, k))
                if src in loss_weight:
                    split.loss_weight.append(loss_weight[src])
                    split.loss_weight.extend([0.0] * (n - 1))
                out_lines.append(_line(lines, i))
    return out, out_lines


# ---------------------------------------------------------------------------- Net
def _unpadded(a: np.ndarray, pad: int) -> np.ndarray:
    """A copy of one batch's array without the zero padding of the last batch."""
    return a[: len(a) - pad].copy() if pad and a.ndim else a.copy()


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """Batches joined along the batch axis; a scalar output (a loss) becomes one value per batch."""
    return np.concatenate(parts) if parts[0].ndim else np.stack(parts)


class LayerBlobNames(OrderedDict):
    """pycaffe's ``net.top_names`` / ``net.bottom_names``: layer name -> list of blob names.

    An int key is a layer's position (``net.top_names[3]``), which also reaches the second of
    two layers that share a name.
    """

    def __init__(self, layer_names: Sequence[str], vecs: list[list[str]]) -> None:
        super().__init__(zip(layer_names, vecs))
        self._vecs = vecs

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self._vecs[key]
        return super().__getitem__(key)


class Net:
    """A network built from a prototxt, with pycaffe's interface.

    ``Net(network_file, phase, level=0, stages=None, weights=None)``, or pycaffe's old form
    ``Net(network_file, weights_file, phase)``.

    Parameters
    ----------
    source : str | os.PathLike | NetParameter | ParsedNet
        A prototxt path, prototxt text, a ``caffe.NetParameter`` or a parsed net.
    phase : int
        ``TRAIN`` or ``TEST`` (overrides the file's ``state``; default: the file's, else TEST).
    level, stages : the rest of the net state used by include/exclude rules.
    weights : optional caffemodel path(s) to copy weights from (by layer name).

    Attributes (pycaffe's)
    ----------------------
    blobs : OrderedDict name -> Blob (``.data``/``.diff`` NumPy views, ``.reshape(*shape)``)
    params : OrderedDict layer name -> list of parameter Blobs
    layers, layer_names (``_layer_names``), layer_dict, inputs, outputs,
    top_names, bottom_names : layer name -> blob names (:class:`LayerBlobNames`)
    """

    def __init__(
        self,
        source,
        phase: int | None = None,
        level: int | None = None,
        stages: Iterable[str] | None = None,
        weights: str | os.PathLike | Sequence | None = None,
    ) -> None:
        from . import layers as _layers  # noqa: F401  (registers every layer type)
        from .io.prototxt import read_net
        from .proto import caffe_pb2

        # pycaffe's old form Net(prototxt, caffemodel, phase)
        if isinstance(phase, (str, os.PathLike)):
            if weights is not None:
                raise NetConfigError("give the weights either as the second argument (Net(prototxt, "
                                     "caffemodel, phase)) or as weights=, not both")
            phase, weights = level, phase
            level = None
        if phase is not None and (isinstance(phase, bool) or phase not in (TRAIN, TEST)):
            raise NetConfigError(f"phase must be pycaffe_lite.TRAIN (0) or pycaffe_lite.TEST (1), not {phase!r}")
        if isinstance(source, caffe_pb2.NetParameter):
            param, lines, filename = source, [], None
        elif hasattr(source, "param") and hasattr(source, "layer_lines"):
            param, lines, filename = source.param, list(source.layer_lines), source.filename
        else:
            parsed = read_net(source)
            param, lines, filename = parsed.param, list(parsed.layer_lines), parsed.filename
        self.filename = filename
        p = caffe_pb2.NetParameter()
        p.CopyFrom(param)
        if phase is not None:
            p.state.phase = int(phase)
        elif not p.state.HasField("phase"):
            p.state.phase = TEST
        if level is not None:
            p.state.level = int(level)
        if stages is not None:
            del p.state.stage[:]
            p.state.stage.extend(stages)
        self.phase = p.state.phase
        self.name = p.name
        self._init(p, lines)
        if weights:
            for w in [weights] if isinstance(weights, (str, os.PathLike)) else weights:
                self.copy_from(w)

    # ------------------------------------------------------------------ building
    def _init(self, param, lines) -> None:
        filtered, lines = filter_net(param, lines, self.filename)
        for i, lp in enumerate(filtered.layer):
            lp.phase = param.state.phase
        split, lines = insert_splits(filtered, lines)
        self.param = split
        self.layers: list[Layer] = []
        self.layer_names: list[str] = []
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self.bottom_vecs: list[list[Blob]] = []
        self.top_vecs: list[list[Blob]] = []
        # per layer, in net order (Caffe's bottom_id_vecs_/top_id_vecs_, by name)
        self.bottom_name_vecs: list[list[str]] = []
        self.top_name_vecs: list[list[str]] = []
        self.blob_loss_weights: dict[str, float] = {}
        self.learnable_params: list[Blob] = []
        self.learnable_param_names: list[str] = []
        self.params_lr: list[float] = []
        self.params_weight_decay: list[float] = []
        self._param_owner: dict[str, tuple[int, int, int]] = {}  # name -> (layer, blob idx, learnable idx)
        available: dict[str, Blob] = {}
        consumed: set[str] = set()
        layer_where: list[str] = []

        for li, lp in enumerate(split.layer):
            loc = where(self.filename, _line(lines, li))
            layer_where.append(loc)
            desc = f"{loc}layer '{lp.name}' ({lp.type})"
            # Caffe allows two layers with one name (its autoencoder example has two 'loss'
            # layers); weights are matched by name, so such layers should hold no parameters.
            cls = LAYERS.get(lp.type, where=f"{loc}layer '{lp.name}': ")
            layer = cls(lp, where=loc)
            if hasattr(layer, "net_file"):  # Python layers import their module from the prototxt's folder
                layer.net_file = self.filename
            bottoms, tops = [], []
            for b in lp.bottom:
                if b not in available:
                    known = ", ".join(f"'{n}'" for n in available) or "none"
                    raise NetConfigError(
                        f"{desc}: bottom blob '{b}' is not produced by any layer above it "
                        f"(blobs available here: {known}). Check the spelling, or the include/exclude "
                        f"rules of the layer that should produce it (phase {'TRAIN' if self.phase == TRAIN else 'TEST'})."
                    )
                bottoms.append(available[b])
                consumed.add(b)
            for j, t in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == t:
                    tops.append(available[t])  # in place
                    continue
                if t in self.blobs:
                    raise NetConfigError(f"{desc}: top blob '{t}' is produced by more than one layer")
                blob = Blob(name=t)
                self.blobs[t] = blob
                available[t] = blob
                consumed.discard(t)
                tops.append(blob)
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise NetConfigError(
                    f"{desc}: {len(lp.propagate_down)} propagate_down values for {len(lp.bottom)} bottoms"
                )
            try:
                layer.set_up(bottoms, tops)
            except PliteError:
                raise
            except Exception as e:  # a layer's own bug or an unforeseen shape problem
                shapes = ", ".join(f"'{n}' {b.shape}" for n, b in zip(lp.bottom, bottoms))
                raise ShapeError(f"{desc}: set-up failed ({type(e).__name__}: {e}); bottom shapes: {shapes}") from e
            for t, w in zip(lp.top, layer.loss_weights):
                if w:
                    self.blob_loss_weights[t] = w
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
            self.bottom_name_vecs.append(list(lp.bottom))
            self.top_name_vecs.append(list(lp.top))
            self._append_params(li, layer, lp, desc)
        self._layer_where = layer_where
        self.outputs = [n for n in available if n not in consumed]
        self.inputs = [t for layer, tn in zip(self.layers, self.top_name_vecs) if layer.type == "Input" for t in tn]
        self._init_backward(split.force_backward)
        self.layer_dict = OrderedDict(zip(self.layer_names, self.layers))
        #: pycaffe's ``net.bottom_names`` / ``net.top_names``: layer name -> blob names
        self.bottom_names = LayerBlobNames(self.layer_names, self.bottom_name_vecs)
        self.top_names = LayerBlobNames(self.layer_names, self.top_name_vecs)

    def _append_params(self, li: int, layer: Layer, lp, desc: str) -> None:
        from .proto import caffe_pb2

        if len(lp.param) > len(layer.blobs):
            raise NetConfigError(f"{desc}: {len(lp.param)} param specs for {len(layer.blobs)} parameter blobs")
        for j, blob in enumerate(layer.blobs):
            spec = lp.param[j] if j < len(lp.param) else caffe_pb2.ParamSpec()
            name = spec.name
            display = name or f"{lp.name}[{j}]"
            if not name or name not in self._param_owner:
                if name:
                    self._param_owner[name] = (li, j, len(self.learnable_params))
                self.learnable_params.append(blob)
                self.learnable_param_names.append(display)
                self.params_lr.append(spec.lr_mult if spec.HasField("lr_mult") else 1.0)
                self.params_weight_decay.append(spec.decay_mult if spec.HasField("decay_mult") else 1.0)
                layer.param_propagate_down[j] = self.params_lr[-1] != 0
                continue
            owner_li, owner_j, learn_idx = self._param_owner[name]
            owner = self.layers[owner_li].blobs[owner_j]
            strict = spec.share_mode == caffe_pb2.ParamSpec.STRICT
            if (strict and owner.shape != blob.shape) or owner.count() != blob.count():
                raise ShapeError(
                    f"{desc}: shared parameter '{name}' has shape {blob.shape} here but {owner.shape} in "
                    f"layer '{self.layer_names[owner_li]}'"
                    + (" (share_mode PERMISSIVE only needs equal counts)" if strict else "")
                )
            if spec.HasField("lr_mult") and self.params_lr[learn_idx] != spec.lr_mult:
                raise NetConfigError(
                    f"{desc}: shared parameter '{name}' has lr_mult {spec.lr_mult} here but "
                    f"{self.params_lr[learn_idx]} in layer '{self.layer_names[owner_li]}'"
                )
            if spec.HasField("decay_mult") and self.params_weight_decay[learn_idx] != spec.decay_mult:
                raise NetConfigError(
                    f"{desc}: shared parameter '{name}' has decay_mult {spec.decay_mult} here but "
                    f"{self.params_weight_decay[learn_idx]} in layer '{self.layer_names[owner_li]}'"
                )
            if owner.shape == blob.shape:
                layer.blobs[j] = owner
            else:  # PERMISSIVE: same storage, this layer's shape
                blob.share_data(owner)
                blob.share_diff(owner)
            layer.param_propagate_down[j] = self.params_lr[learn_idx] != 0

    def _init_backward(self, force_backward: bool) -> None:
        """Caffe's need-backward analysis (forward sweep, then a sweep back from the losses)."""
        n = len(self.layers)
        blob_need = {}
        self.bottom_need_backward: list[list[bool]] = []
        self.layer_need_backward: list[bool] = []
        for li, layer in enumerate(self.layers):
            lp = layer.layer_param
            need = False
            bneed = []
            for j, b in enumerate(self.bottom_name_vecs[li]):
                nb = blob_need.get(b, False)
                if lp.propagate_down and not lp.propagate_down[j]:
                    nb = False
                bneed.append(nb)
                need |= blob_need.get(b, False)
            need |= any(layer.param_propagate_down)
            for t in self.top_name_vecs[li]:
                blob_need[t] = need
            self.bottom_need_backward.append(bneed)
            self.layer_need_backward.append(need)
        under_loss: set[str] = set()
        skip_backp: set[str] = set()
        for li in range(n - 1, -1, -1):
            layer = self.layers[li]
            contributes = False
            skip_propagate = True
            for j, t in enumerate(self.top_name_vecs[li]):
                if (j < len(layer.loss_weights) and layer.loss_weights[j]) or t in under_loss:
                    contributes = True
                if t not in skip_backp:
                    skip_propagate = False
                if contributes and not skip_propagate:
                    break
            if self.layer_need_backward[li] and skip_propagate:
                self.layer_need_backward[li] = False
                self.bottom_need_backward[li] = [False] * len(self.bottom_name_vecs[li])
            if not contributes:
                self.layer_need_backward[li] = False
            for j, b in enumerate(self.bottom_name_vecs[li]):
                if contributes:
                    under_loss.add(b)
                else:
                    self.bottom_need_backward[li][j] = False
                if not self.bottom_need_backward[li][j]:
                    skip_backp.add(b)
        for li, layer in enumerate(self.layers):
            # Self-trained layers (an RBM's contrastive divergence) make their own parameter
            # gradients: run their backward whenever a parameter learns, loss or not. Their
            # bottoms keep the decision above (a gradient only if a loss depends on the tops).
            if layer.self_trained and any(layer.param_propagate_down):
                self.layer_need_backward[li] = True
        if force_backward:
            for li, layer in enumerate(self.layers):
                self.layer_need_backward[li] = True
                self.bottom_need_backward[li] = [
                    need or layer.allow_force_backward(j) for j, need in enumerate(self.bottom_need_backward[li])
                ]
                layer.param_propagate_down = [True] * len(layer.blobs)

    # ------------------------------------------------------------------ running
    def _index(self, layer: str | int | None, default: int) -> int:
        """A layer's position from its name (pycaffe's ``start``/``end``) or an int index."""
        if layer is None:
            return default
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not -len(self.layers) <= layer < len(self.layers):
                raise NetConfigError(f"net '{self.name}' has {len(self.layers)} layers; index {layer} is out of range")
            return int(layer) % len(self.layers)
        try:
            return self.layer_names.index(layer)
        except ValueError:
            raise NetConfigError(
                f"net '{self.name}' has no layer named '{layer}' (layers: {', '.join(self.layer_names)})"
            ) from None

    def forward_loss(self, start: int = 0, end: int | None = None) -> float:
        """Run layers ``start..end`` (inclusive, indices) and return the total weighted loss.

        The solver's and the CLI's forward (Caffe's ForwardFromTo); :meth:`forward` is pycaffe's.
        """
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for li in range(start, end + 1):
            loss += self.layers[li].run_forward(self.bottom_vecs[li], self.top_vecs[li])
        return loss

    _forward = forward_loss  # pycaffe's name

    def _backward(self, start: int | None = None, end: int = 0) -> None:
        """Back-propagate from layer ``start`` (index; default the last) down to ``end`` (Caffe's
        BackwardFromTo). Only layers that need backward run: a deploy net without a loss needs
        ``force_backward: true`` for gradients to reach its inputs, as in Caffe."""
        start = len(self.layers) - 1 if start is None else start
        for li in range(start, end - 1, -1):
            if self.layer_need_backward[li]:
                self.layers[li].run_backward(self.top_vecs[li], self.bottom_need_backward[li], self.bottom_vecs[li])

    def _set_arrays(self, arrays: dict, which: str) -> None:
        """Copy ``{blob name: array}`` into the blobs' ``data`` or ``diff`` (shapes must match)."""
        for name, value in arrays.items():
            if name not in self.blobs:
                raise NetConfigError(
                    f"net '{self.name}' has no blob named '{name}' to set the {which} of "
                    f"(inputs: {', '.join(self.inputs) or 'none'}; outputs: {', '.join(self.outputs)})"
                )
            blob = self.blobs[name]
            value = np.asarray(value, dtype=np.float32)
            if value.shape != blob.shape:
                what = "input" if which == "data" else "diff for"
                raise ShapeError(
                    f"{what} '{name}' has shape {value.shape} but the net expects {blob.shape}; "
                    f"call net.blobs['{name}'].reshape(...) and net.reshape() first (or use forward_all)"
                )
            getattr(blob, which)[...] = value

    def forward(self, blobs: Sequence[str] | None = None, start: str | int | None = None,
                end: str | int | None = None, **inputs) -> dict[str, np.ndarray]:
        """pycaffe's forward: copy ``inputs`` (blob name -> array) into the blobs, run layers
        ``start..end`` (layer names, inclusive), return ``{blob: data}`` for the net's outputs
        (the tops of ``end`` when it is given) plus ``blobs``.

        The returned arrays are the blobs' own storage: copy them if you keep them.
        """
        self._set_arrays(inputs, "data")
        s = self._index(start, 0)
        e = self._index(end, len(self.layers) - 1)
        self.forward_loss(s, e)
        names = list(self.outputs if end is None else self.top_name_vecs[e]) + list(blobs or [])
        return {n: self._blob(n).data for n in dict.fromkeys(names)}

    def backward(self, diffs: Sequence[str] | None = None, start: str | int | None = None,
                 end: str | int | None = None, **top_diffs) -> dict[str, np.ndarray]:
        """pycaffe's backward: copy ``top_diffs`` (output blob name -> array) into the blobs'
        diffs, back-propagate from layer ``start`` down to ``end`` (layer names, inclusive), and
        return ``{blob: diff}`` for the net's inputs (the bottoms of ``end`` when it is given)
        plus ``diffs``.

        Loss layers set their own top diff (the loss weight) in forward. As in Caffe, gradients
        reach the inputs only if something below a loss needs them, or with ``force_backward``.
        """
        self._set_arrays(top_diffs, "diff")
        s = self._index(start, len(self.layers) - 1)
        e = self._index(end, 0)
        self._backward(s, e)
        names = list(self.inputs if end is None else self.bottom_name_vecs[e]) + list(diffs or [])
        return {n: self._blob(n).diff for n in dict.fromkeys(names)}

    def forward_backward(self) -> float:
        """One forward and backward pass over the whole net (the solver's step); returns the loss."""
        loss = self.forward_loss()
        self._backward()
        return loss

    def _blob(self, name: str) -> Blob:
        if name not in self.blobs:
            raise NetConfigError(f"net '{self.name}' has no blob named '{name}'")
        return self.blobs[name]

    def _batches(self, arrays: dict):
        """Split ``{input: array}`` into batches of the blobs' batch size, the last one padded
        with zeros; yields ``({input: batch}, padding)``."""
        if not arrays:
            return
        sizes = {n: len(a) for n, a in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ShapeError(f"arrays given to forward_all/forward_backward_all differ in length: {sizes}")
        total = next(iter(sizes.values()))
        shape = self._blob(next(iter(arrays))).shape
        batch = max(shape[0], 1) if shape else 1
        for i in range(0, total, batch):
            pad = max(0, i + batch - total)
            out = {}
            for n, a in arrays.items():
                chunk = np.asarray(a[i:i + batch], dtype=np.float32)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
                out[n] = chunk
            yield out, pad

    def forward_all(self, blobs: Sequence[str] | None = None, **inputs) -> dict[str, np.ndarray]:
        """Forward any number of items in batches of the input blobs' batch size (the last batch
        padded with zeros, the padding dropped again); returns the outputs (and ``blobs``)
        concatenated over the batches, as copies."""
        if not inputs:
            return {n: a.copy() for n, a in self.forward(blobs).items()}
        parts: dict[str, list] = {}
        for batch, pad in self._batches(inputs):
            for n, a in self.forward(blobs, **batch).items():
                parts.setdefault(n, []).append(_unpadded(a, pad))
        return {n: _joined(p) for n, p in parts.items()}

    def forward_backward_all(self, blobs: Sequence[str] | None = None, diffs: Sequence[str] | None = None,
                             **arrays) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Forward and backward in batches: ``arrays`` holds input data (by input name) and
        output diffs (by output name); returns ``(outputs, input diffs)`` concatenated over the
        batches (see :meth:`forward_all`)."""
        fwd = {n: a for n, a in arrays.items() if n not in self.outputs}
        bwd = {n: a for n, a in arrays.items() if n in self.outputs}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) > 1:
            raise ShapeError(f"forward_backward_all: the arrays differ in length ({sorted(lengths)})")
        outs: dict[str, list] = {}
        grads: dict[str, list] = {}
        no_batch = ({}, 0)
        pairs = itertools.zip_longest(self._batches(fwd), self._batches(bwd), fillvalue=no_batch)
        if not arrays:  # one pass on what the blobs hold
            pairs = [(no_batch, no_batch)]
        for (fb, fpad), (bb, bpad) in pairs:
            pad = max(fpad, bpad)
            for store, result in ((outs, self.forward(blobs, **fb)), (grads, self.backward(diffs, **bb))):
                for n, a in result.items():
                    store.setdefault(n, []).append(_unpadded(a, pad))
        return {n: _joined(p) for n, p in outs.items()}, {n: _joined(p) for n, p in grads.items()}

    def set_input_arrays(self, data, labels) -> None:
        """Feed a MemoryData layer (the net's first layer) from arrays, as pycaffe does.

        ``data`` is (N, C, H, W); ``labels`` (N,) or (N, 1, 1, 1). The layer's own ``reset``
        checks the shapes against its ``memory_data_param``.
        """
        first = self.layers[0] if self.layers else None
        if first is None or first.type != "MemoryData":
            what = f"'{self.layer_names[0]}' ({first.type})" if first is not None else "no layer"
            raise NetConfigError(
                f"net '{self.name}': set_input_arrays needs a MemoryData layer as the first layer, but the "
                f"net starts with {what}"
            )
        reset = getattr(first, "reset", None)
        if reset is None:
            raise NetConfigError(f"{first.describe()}: this MemoryData layer cannot be fed from Python (no reset)")
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if labels.ndim == 1:
            labels = labels[:, None, None, None]
        if data.ndim != 4 or labels.ndim != 4 or data.shape[0] != labels.shape[0]:
            raise ShapeError(
                f"{first.describe()}: set_input_arrays needs data (N, C, H, W) and labels (N,) with the same N; "
                f"got data {data.shape} and labels {labels.shape}"
            )
        reset(data, labels)

    @property
    def _layer_names(self) -> list[str]:
        """pycaffe's ``net._layer_names``."""
        return self.layer_names

    @property
    def _blob_names(self) -> list[str]:
        """pycaffe's ``net._blob_names``."""
        return list(self.blobs)

    def reshape(self) -> None:
        for li, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[li], self.top_vecs[li])

    def clear_param_diffs(self) -> None:
        for b in self.learnable_params:
            b.diff[...] = 0

    def update(self) -> None:
        for b in self.learnable_params:
            b.update()

    @property
    def params(self) -> OrderedDict[str, list[Blob]]:
        return OrderedDict((n, l.blobs) for n, l in zip(self.layer_names, self.layers) if l.blobs)

    def first_nonfinite(self) -> str | None:
        """Describe the first layer whose top holds NaN/inf (for divergence messages)."""
        for li, layer in enumerate(self.layers):
            for t, blob in zip(self.top_name_vecs[li], self.top_vecs[li]):
                if not np.all(np.isfinite(blob.data)):
                    return f"{layer.describe()} top '{t}'"
            for j, blob in enumerate(layer.blobs):
                if not np.all(np.isfinite(blob.data)):
                    return f"{layer.describe()} parameter blob {j}"
        return None

    # ------------------------------------------------------------------ weights
    def share_with(self, other: Net) -> None:
        """Use ``other``'s parameter storage for every layer the two nets have by name (Caffe's
        ShareTrainedLayersWith; how a solver's test nets see the trained weights)."""
        by_name = dict(zip(self.layer_names, self.layers))
        for name, source in zip(other.layer_names, other.layers):
            target = by_name.get(name)
            if target is None or not source.blobs:
                continue
            if len(target.blobs) != len(source.blobs):
                raise ShapeError(f"{target.describe()}: {len(target.blobs)} parameter blobs here but "
                                 f"{len(source.blobs)} in layer '{name}' of net '{other.name}'")
            for j, (t, src) in enumerate(zip(target.blobs, source.blobs)):
                if t.shape != src.shape:
                    raise ShapeError(f"{target.describe()}: cannot share parameter blob {j}: shape {t.shape} "
                                     f"here but {src.shape} in net '{other.name}'")
                t.share_data(src)

    def to_proto(self, write_diff: bool = False):
        """A NetParameter with every layer's definition and blobs (what a caffemodel holds)."""
        from .proto import caffe_pb2

        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer in self.layers:
            lp = out.layer.add()
            lp.CopyFrom(layer.layer_param)
            del lp.blobs[:]
            for b in layer.blobs:
                b.to_proto(lp.blobs.add(), write_diff=write_diff)
        return out

    def save(self, path: str | os.PathLike, write_diff: bool = False) -> None:
        """Write a binary caffemodel atomically (BVLC Caffe reads it)."""
        from .io.caffemodel import write_caffemodel

        write_caffemodel(self.to_proto(write_diff), path)

    def copy_from(self, source) -> None:
        """Copy weights by layer name from a caffemodel path or a NetParameter.

        Layers absent from this net are ignored (as in Caffe); a blob whose shape differs
        is an error naming the layer, the file and both shapes.
        """
        from .io.caffemodel import read_caffemodel

        if isinstance(source, (str, os.PathLike)):
            src_name = os.fspath(source)
            param = read_caffemodel(source)
        else:
            src_name, param = "the given NetParameter", source
        by_name = {n: i for i, n in enumerate(self.layer_names)}
        copied = 0
        for lp in param.layer:
            li = by_name.get(lp.name)
            if li is None or not lp.blobs:
                continue
            layer = self.layers[li]
            if len(lp.blobs) != len(layer.blobs):
                raise ShapeError(
                    f"{layer.describe()}: {os.path.basename(src_name)} holds {len(lp.blobs)} parameter blobs "
                    f"but the layer has {len(layer.blobs)}"
                )
            for j, (bp, blob) in enumerate(zip(lp.blobs, layer.blobs)):
                shape = proto_shape(bp)
                if tuple(shape) != blob.shape:
                    legacy = len(shape) == 4 and int(np.prod(shape)) == blob.count() and \
                        tuple(shape[: 4 - blob.num_axes]) == (1,) * (4 - blob.num_axes)
                    if not legacy:
                        raise ShapeError(
                            f"{layer.describe()}: weights in {os.path.basename(src_name)} have shape "
                            f"{tuple(shape)} but the net expects {blob.shape} (blob {j})"
                        )
                from .blob import proto_values

                values = proto_values(bp, "data")
                if values.size != blob.count():
                    raise DataError(
                        f"{layer.describe()}: blob {j} in {src_name} has {values.size} values for shape {tuple(shape)}"
                    )
                blob.data[...] = values.reshape(blob.shape)
            copied += 1
        if copied == 0 and any(l.blobs for l in self.layers):
            import logging

            logging.getLogger("pycaffe_lite").warning(
                "no layer of %s matched a layer of net '%s' by name; nothing was copied", src_name, self.name
            )

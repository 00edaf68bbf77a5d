"""Net: build a DAG of layers from a NetParameter and run it forward and backward.

Build order (Caffe's Net::Init): filter layers by the net state (phase, level,
stages) -> insert Split layers where one blob feeds several layers -> create and
wire the layers (in-place tops reuse the bottom blob) -> set up each layer ->
share parameters by ``param { name }`` -> decide which layers need backward.
"""
from __future__ import annotations

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
class Net:
    """A network built from a prototxt.

    Parameters
    ----------
    source : str | os.PathLike | NetParameter | ParsedNet
        A prototxt path, prototxt text, a ``caffe.NetParameter`` or a parsed net.
    phase : int
        ``TRAIN`` or ``TEST`` (overrides the file's ``state``).
    level, stages : the rest of the net state used by include/exclude rules.
    weights : optional caffemodel path(s) to copy weights from (by layer name).
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
            phase, weights = level, phase
            level = None
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
        self.bottom_names: list[list[str]] = []
        self.top_names: list[list[str]] = []
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
            self.bottom_names.append(list(lp.bottom))
            self.top_names.append(list(lp.top))
            self._append_params(li, layer, lp, desc)
        self._layer_where = layer_where
        self.outputs = [n for n in available if n not in consumed]
        self.inputs = [t for layer, tn in zip(self.layers, self.top_names) if layer.type == "Input" for t in tn]
        self._init_backward(split.force_backward)
        self.layer_dict = OrderedDict(zip(self.layer_names, self.layers))

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
            for j, b in enumerate(self.bottom_names[li]):
                nb = blob_need.get(b, False)
                if lp.propagate_down and not lp.propagate_down[j]:
                    nb = False
                bneed.append(nb)
                need |= blob_need.get(b, False)
            need |= any(layer.param_propagate_down)
            for t in self.top_names[li]:
                blob_need[t] = need
            self.bottom_need_backward.append(bneed)
            self.layer_need_backward.append(need)
        under_loss: set[str] = set()
        skip_backp: set[str] = set()
        for li in range(n - 1, -1, -1):
            layer = self.layers[li]
            contributes = False
            skip_propagate = True
            for j, t in enumerate(self.top_names[li]):
                if (j < len(layer.loss_weights) and layer.loss_weights[j]) or t in under_loss:
                    contributes = True
                if t not in skip_backp:
                    skip_propagate = False
                if contributes and not skip_propagate:
                    break
            if self.layer_need_backward[li] and skip_propagate:
                self.layer_need_backward[li] = False
                self.bottom_need_backward[li] = [False] * len(self.bottom_names[li])
            if not contributes:
                self.layer_need_backward[li] = False
            for j, b in enumerate(self.bottom_names[li]):
                if contributes:
                    under_loss.add(b)
                else:
                    self.bottom_need_backward[li][j] = False
                if not self.bottom_need_backward[li][j]:
                    skip_backp.add(b)
        if force_backward:
            for li, layer in enumerate(self.layers):
                self.layer_need_backward[li] = True
                self.bottom_need_backward[li] = [
                    need or layer.allow_force_backward(j) for j, need in enumerate(self.bottom_need_backward[li])
                ]
                layer.param_propagate_down = [True] * len(layer.blobs)

    # ------------------------------------------------------------------ running
    def _index(self, name: str | None, default: int) -> int:
        if name is None:
            return default
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise NetConfigError(f"net '{self.name}' has no layer named '{name}'") from None

    def forward_loss(self, start: int = 0, end: int | None = None) -> float:
        """Run layers ``start..end`` (inclusive) and return the total weighted loss."""
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for li in range(start, end + 1):
            loss += self.layers[li].run_forward(self.bottom_vecs[li], self.top_vecs[li])
        return loss

    def forward(self, blobs: Sequence[str] | None = None, start: str | None = None, end: str | None = None,
                **inputs) -> dict[str, np.ndarray]:
        """pycaffe's forward: set ``inputs`` (blob name -> array), run, return output blobs.

        The returned arrays are the blobs' own storage (copy them if you keep them).
        """
        for name, value in inputs.items():
            if name not in self.blobs:
                raise NetConfigError(f"net '{self.name}' has no blob named '{name}' to feed")
            value = np.asarray(value, dtype=np.float32)
            if value.shape != self.blobs[name].shape:
                raise ShapeError(
                    f"input '{name}' has shape {value.shape} but the net expects {self.blobs[name].shape}; "
                    "call net.blobs[name].reshape(...) and net.reshape() first"
                )
            self.blobs[name].data[...] = value
        s = self._index(start, 0)
        e = self._index(end, len(self.layers) - 1)
        self.forward_loss(s, e)
        names = list(self.outputs if end is None else self.top_names[e]) + list(blobs or [])
        return {n: self.blobs[n].data for n in names}

    def backward(self, start: int | None = None, end: int = 0) -> None:
        """Back-propagate from layer ``start`` (default: the last) down to ``end``."""
        start = len(self.layers) - 1 if start is None else start
        for li in range(start, end - 1, -1):
            if self.layer_need_backward[li]:
                self.layers[li].run_backward(self.top_vecs[li], self.bottom_need_backward[li], self.bottom_vecs[li])

    def forward_backward(self) -> float:
        loss = self.forward_loss()
        self.backward()
        return loss

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
            for t, blob in zip(self.top_names[li], self.top_vecs[li]):
                if not np.all(np.isfinite(blob.data)):
                    return f"{layer.describe()} top '{t}'"
            for j, blob in enumerate(layer.blobs):
                if not np.all(np.isfinite(blob.data)):
                    return f"{layer.describe()} parameter blob {j}"
        return None

    # ------------------------------------------------------------------ weights
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

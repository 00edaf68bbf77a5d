"""Layers that only rearrange or route blobs: Flatten, Split, Reshape, Concat, Slice, Tile.

Where Caffe shares storage instead of copying, so do they: Flatten and Reshape tops are
views of their bottom (data and diff), Split tops are views of the bottom's data, and a
Concat of one bottom or a Slice into one top shares both.
"""

from __future__ import annotations

import numpy as np

from ..layer import Layer
from ..registry import register_layer


@register_layer("Flatten", v1="FLATTEN")
class FlattenLayer(Layer):
    """Merge the axes ``axis`` .. ``end_axis`` (inclusive; negative allowed) into one.

    Bottom: x (d_0, ..., d_n).  Top: y (d_0, ..., d_{a-1}, d_a * ... * d_e, d_{e+1}, ...),
    a = ``axis`` (default 1), e = ``end_axis`` (default -1).  No blobs.
    Forward: y = x (y shares x's data).  Backward: dx = dy (x shares y's diff).
    Not in place.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def _axes(self, blob) -> tuple[int, int]:
        param = self.layer_param.flatten_param
        n = blob.num_axes
        axes = []
        for name, value in (("axis", param.axis), ("end_axis", param.end_axis)):
            if not -n <= value < n:
                raise self.shape_error(
                    f"flatten_param.{name} {value} is out of range for bottom shape {blob.shape}"
                )
            axes.append(value + n if value < 0 else value)
        start, end = axes
        if end < start:
            raise self.config_error(
                f"flatten_param.end_axis ({param.end_axis}) comes before axis ({param.axis}) "
                f"for bottom shape {blob.shape}"
            )
        return start, end

    def setup(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.config_error("Flatten cannot run in place; give its top another name")
        self._axes(bottom[0])

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        start, end = self._axes(x)
        top[0].reshape(x.shape[:start] + (x.count(start, end + 1),) + x.shape[end + 1 :])
        top[0].share_data(x)
        top[0].share_diff(x)

    def forward(self, bottom, top) -> None:
        top[0].share_data(bottom[0])

    def backward(self, top, propagate_down, bottom) -> None:
        # The diffs are shared since reshape; copy only if someone re-pointed them.
        if propagate_down[0] and not np.shares_memory(top[0].diff, bottom[0].diff):
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


@register_layer("Split", v1="SPLIT")
class SplitLayer(Layer):
    """Hand one blob to several consumers; the net inserts these automatically.

    Bottom: x (any shape).  Tops: y_1..y_n, each shaped like x and sharing its data.
    No blobs.
    Forward: y_i = x (shared storage, no copy).
    Backward: dx = sum_i dy_i.
    Not in place.
    """

    exact_num_bottom = 1
    min_num_top = 1

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        for i, t in enumerate(top):
            if t is x:
                raise self.config_error(f"top[{i}] is the bottom blob; Split cannot run in place")
            t.reshape_like(x)
            t.share_data(x)

    def forward(self, bottom, top) -> None:
        for t in top:
            t.share_data(bottom[0])

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        if len(top) == 1:
            np.copyto(dx, top[0].diff)
            return
        np.add(top[0].diff, top[1].diff, out=dx)
        for t in top[2:]:
            dx += t.diff


@register_layer("Reshape")
class ReshapeLayer(Layer):
    """Give the bottom a new shape without copying (top shares data and diff).

    Bottom: x.  Top: y with x's count.  No blobs.  Not in place.
    ``reshape_param.shape`` replaces the bottom axes [axis, axis + num_axes) (default: all;
    a negative ``axis`` counts from the end, -1 meaning after the last axis): a 0 copies the
    bottom dimension at the same position, one -1 is inferred from the count.
    Examples for x (2, 3, 4): ``shape { dim: 0 dim: -1 }`` -> (2, 12);
    ``axis: 1 num_axes: 1 shape { dim: 3 dim: 1 }`` -> (2, 3, 1, 4).
    Forward: y = x.  Backward: dx = dy (shared storage).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.config_error("Reshape cannot run in place; give its top another name")
        dims = [int(d) for d in self.layer_param.reshape_param.shape.dim]
        self.dims = dims
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            raise self.config_error(
                f"reshape_param.shape {dims} has {len(inferred)} dimensions of -1; at most one can be inferred"
            )
        if any(d < -1 for d in dims):
            raise self.config_error(
                f"reshape_param.shape {dims} has a dimension below -1; use a positive size, 0 (copy the "
                "bottom's) or -1 (infer)"
            )
        self.inferred_axis = inferred[0] if inferred else None
        self.constant_count = int(np.prod([d for d in dims if d > 0], dtype=np.int64))

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        param = self.layer_param.reshape_param
        n = x.num_axes
        start = param.axis if param.axis >= 0 else param.axis + n + 1
        if not 0 <= start <= n:
            raise self.shape_error(f"reshape_param.axis {param.axis} is out of range for bottom shape {x.shape}")
        if param.num_axes < -1:
            raise self.config_error(f"reshape_param.num_axes {param.num_axes} must be >= 0, or -1 for all axes")
        end = n if param.num_axes == -1 else start + param.num_axes
        if end > n:
            raise self.shape_error(
                f"reshape_param.axis {param.axis} + num_axes {param.num_axes} goes past the last axis "
                f"of bottom shape {x.shape}"
            )
        new = list(self.dims)
        for i in self.copy_axes:
            if start + i >= n:
                raise self.shape_error(
                    f"reshape_param.shape {self.dims} has 0 at position {i}, but bottom shape {x.shape} "
                    f"has no axis {start + i} to copy"
                )
            new[i] = x.shape[start + i]
        if self.inferred_axis is not None:
            explicit = int(np.prod([d for d in new if d != -1], dtype=np.int64)) * x.count(0, start) * x.count(end)
            if explicit == 0 or x.count() % explicit:
                raise self.shape_error(
                    f"cannot infer the -1 in reshape_param.shape {self.dims}: bottom shape {x.shape} has "
                    f"{x.count()} values, not a multiple of the other dimensions' product {explicit}"
                )
            new[self.inferred_axis] = x.count() // explicit
        shape = x.shape[:start] + tuple(new) + x.shape[end:]
        if int(np.prod(shape, dtype=np.int64)) != x.count():
            raise self.shape_error(
                f"reshape_param.shape {self.dims} gives top shape {shape} with "
                f"{int(np.prod(shape, dtype=np.int64))} values, but bottom shape {x.shape} has {x.count()}"
            )
        top[0].reshape(shape)
        top[0].share_data(x)
        top[0].share_diff(x)

    def forward(self, bottom, top) -> None:
        top[0].share_data(bottom[0])

    def backward(self, top, propagate_down, bottom) -> None:
        # The diffs are shared since reshape; copy only if someone re-pointed them.
        if propagate_down[0] and not np.shares_memory(top[0].diff, bottom[0].diff):
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)


def _legacy_or_axis(layer, blob, legacy: str, has_legacy: bool, legacy_value: int, axis: int) -> int:
    """The axis of Concat/Slice: the legacy ``concat_dim``/``slice_dim`` (non-negative) if
    given, else ``axis`` (negative counts from the end)."""
    n = blob.num_axes
    if has_legacy:
        if legacy_value >= n:
            raise layer.shape_error(f"{legacy} {legacy_value} is out of range for bottom shape {blob.shape}")
        return legacy_value
    if not -n <= axis < n:
        raise layer.shape_error(f"axis {axis} is out of range for bottom shape {blob.shape}")
    return axis + n if axis < 0 else axis


@register_layer("Concat", v1="CONCAT")
class ConcatLayer(Layer):
    """Join the bottoms along one axis.

    Bottoms: x_1..x_k, equal shapes except along ``axis`` (default 1, the channels;
    legacy ``concat_dim``).  Top: y with the sizes along ``axis`` summed.  No blobs.
    Forward: y = [x_1, ..., x_k] along ``axis`` (one bottom: y shares x's storage).
    Backward: dx_i = the slice of dy that x_i filled.
    """

    min_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.concat_param
        if param.HasField("axis") and param.HasField("concat_dim"):
            raise self.config_error("concat_param gives both axis and concat_dim (its legacy name); give one")
        for i, b in enumerate(bottom):
            if b is top[0]:
                raise self.config_error(f"top is bottom[{i}]; Concat cannot run in place")

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.concat_param
        x0 = bottom[0]
        axis = _legacy_or_axis(self, x0, "concat_param.concat_dim", param.HasField("concat_dim"),
                               param.concat_dim, param.axis)
        total = 0
        for i, b in enumerate(bottom):
            if b.num_axes != x0.num_axes or b.shape[:axis] != x0.shape[:axis] or b.shape[axis + 1:] != x0.shape[axis + 1:]:
                raise self.shape_error(
                    f"{self._label(i)} has shape {b.shape} but {self._label(0)} has "
                    f"{x0.shape}: all bottoms must have the same shape except along axis {axis}"
                )
            total += b.shape[axis]
        self.axis = axis
        top[0].reshape(x0.shape[:axis] + (total,) + x0.shape[axis + 1:])
        if len(bottom) == 1:
            top[0].share_data(x0)
            top[0].share_diff(x0)

    def _label(self, i: int) -> str:
        names = self.layer_param.bottom
        return f"bottom[{i}] '{names[i]}'" if i < len(names) else f"bottom[{i}]"

    def _slices(self, bottom):
        offset = 0
        for b in bottom:
            size = b.shape[self.axis]
            yield b, (slice(None),) * self.axis + (slice(offset, offset + size),)
            offset += size

    def forward(self, bottom, top) -> None:
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            return
        y = top[0].data
        for b, index in self._slices(bottom):
            y[index] = b.data

    def backward(self, top, propagate_down, bottom) -> None:
        if len(bottom) == 1:
            if propagate_down[0] and not np.shares_memory(top[0].diff, bottom[0].diff):
                bottom[0].diff[...] = top[0].diff
            return
        dy = top[0].diff
        for (b, index), down in zip(self._slices(bottom), propagate_down):
            if down:
                b.diff[...] = dy[index]


@register_layer("Slice", v1="SLICE")
class SliceLayer(Layer):
    """Cut the bottom into pieces along one axis.

    Bottom: x.  Tops: y_1..y_k.  No blobs.
    ``axis`` (default 1; legacy ``slice_dim``); ``slice_point`` p_1 < ... < p_{k-1} (k - 1
    values) give the cuts, y_i = x[p_{i-1}:p_i] along the axis; without them the axis is
    cut into k equal pieces (it must divide evenly).  One top shares x's storage.
    Backward: dx = [dy_1, ..., dy_k] along the axis.
    """

    exact_num_bottom = 1
    min_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.slice_param
        if param.HasField("axis") and param.HasField("slice_dim"):
            raise self.config_error("slice_param gives both axis and slice_dim (its legacy name); give one")
        for i, t in enumerate(top):
            if t is bottom[0]:
                raise self.config_error(f"top[{i}] is the bottom; Slice cannot run in place")

    def reshape(self, bottom, top) -> None:
        param = self.layer_param.slice_param
        x = bottom[0]
        axis = _legacy_or_axis(self, x, "slice_param.slice_dim", param.HasField("slice_dim"),
                               param.slice_dim, param.axis)
        size = x.shape[axis]
        points = [int(p) for p in param.slice_point]
        k = len(top)
        if points:
            if len(points) != k - 1:
                raise self.config_error(
                    f"{len(points)} slice_point values for {k} tops; give one fewer than the tops ({k - 1})"
                )
            sizes = np.diff([0, *points, size]).tolist()
            if min(sizes) <= 0:
                raise self.shape_error(
                    f"slice_point {points} must increase strictly and stay inside (0, {size}) for axis "
                    f"{axis} of bottom shape {x.shape}"
                )
        else:
            if size % k:
                raise self.shape_error(
                    f"{k} tops cannot split axis {axis} of bottom shape {x.shape} ({size}) evenly; "
                    "give slice_point values"
                )
            sizes = [size // k] * k
        self.axis = axis
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        for t, s in zip(top, sizes):
            t.reshape(x.shape[:axis] + (s,) + x.shape[axis + 1:])
        if k == 1:
            top[0].share_data(x)
            top[0].share_diff(x)

    def _index(self, i: int):
        return (slice(None),) * self.axis + (slice(self.bounds[i], self.bounds[i + 1]),)

    def forward(self, bottom, top) -> None:
        if len(top) == 1:
            top[0].share_data(bottom[0])
            return
        x = bottom[0].data
        for i, t in enumerate(top):
            t.data[...] = x[self._index(i)]

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        if len(top) == 1:
            if not np.shares_memory(top[0].diff, bottom[0].diff):
                bottom[0].diff[...] = top[0].diff
            return
        dx = bottom[0].diff
        for i, t in enumerate(top):
            dx[self._index(i)] = t.diff


@register_layer("Tile")
class TileLayer(Layer):
    """Repeat the bottom ``tiles`` times along ``axis``.

    Bottom: x (d_0, ..., d_a, ...).  Top: y with d_a * ``tiles`` at ``axis`` a (default 1).
    No blobs.  Not in place.
    Forward: the block x[i_0..i_{a-1}, :, ...] (everything from the axis on) is written
    ``tiles`` times in a row; e.g. x (2, 3) with axis 1, tiles 2 -> [x_0 x_0; x_1 x_1].
    Backward: dx = the sum of the ``tiles`` blocks of dy.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.tile_param
        if not param.HasField("tiles"):
            raise self.config_error("tile_param.tiles must be given (the number of copies)")
        if param.tiles <= 0:
            raise self.config_error(f"tile_param.tiles is {param.tiles}; it must be positive")
        if top[0] is bottom[0]:
            raise self.config_error("Tile cannot run in place; give its top another name")
        self.tiles = int(param.tiles)

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        axis = self.layer_param.tile_param.axis
        if not -x.num_axes <= axis < x.num_axes:
            raise self.shape_error(f"tile_param.axis {axis} is out of range for bottom shape {x.shape}")
        axis = axis + x.num_axes if axis < 0 else axis
        self.outer = x.count(0, axis)
        self.inner = x.count(axis)
        top[0].reshape(x.shape[:axis] + (x.shape[axis] * self.tiles,) + x.shape[axis + 1:])

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = x

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            np.sum(dy, axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))

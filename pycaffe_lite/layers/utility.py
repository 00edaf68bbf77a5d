"""Utility layers: Eltwise, Reduction, ArgMax, Filter, BatchReindex, Parameter, Silence, Embed.

Layers that combine, reduce, select or index blobs; none of them has a paper of its own.
Inputs that are indices (Filter's selector, BatchReindex's permutation, Embed's words)
never take a gradient, as in Caffe: asking for one is a configuration error.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer
from .neuron import _scratch

PROD = caffe_pb2.EltwiseParameter.PROD
SUM = caffe_pb2.EltwiseParameter.SUM
MAX = caffe_pb2.EltwiseParameter.MAX


def _bottom_name(layer: Layer, i: int) -> str:
    names = layer.layer_param.bottom
    return f"bottom[{i}] '{names[i]}'" if i < len(names) else f"bottom[{i}]"


def _indices(layer: Layer, values: np.ndarray, limit: int, what: str) -> np.ndarray:
    """Integer indices from float data (truncated like a C cast), each in [0, limit)."""
    index = values.astype(np.int64).ravel()
    if index.size and (index.min() < 0 or index.max() >= limit):
        bad = index[(index < 0) | (index >= limit)][0]
        raise DataError(f"{layer.describe()}: {what} {bad} is out of range; it must be in [0, {limit})")
    return index


@register_layer("Eltwise", v1="ELTWISE")
class EltwiseLayer(Layer):
    """Combine bottoms of one shape element by element.

    Bottoms: x_1..x_k (k >= 2), all of one shape.  Top: y, that shape.  No blobs.
    Forward by ``operation``: SUM (default) y = sum_i c_i x_i with ``coeff`` c (one per
    bottom, default 1); PROD y = prod_i x_i; MAX y = max_i x_i (ties: bottom 1 beats
    bottom 0, a later bottom must be strictly larger, as in Caffe).
    Backward: SUM dx_i = c_i dy; PROD dx_i = dy prod_{j != i} x_j (``stable_prod_grad``,
    the default) or dy y / x_i; MAX dx_i = dy where x_i was the maximum, else 0.
    In place on bottom 0 allowed (the residual shortcut ``top: "x"``).
    """

    min_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.eltwise_param
        self.op = param.operation
        coeff = list(param.coeff)
        if coeff and len(coeff) != len(bottom):
            raise self.config_error(
                f"{len(coeff)} eltwise_param.coeff values for {len(bottom)} bottoms; give one per bottom"
            )
        if coeff and self.op == PROD:
            raise self.config_error("eltwise_param.coeff applies to SUM only, not PROD")
        self.coeff = [np.float32(c) for c in coeff] or [np.float32(1)] * len(bottom)
        self.stable_prod_grad = bool(param.stable_prod_grad)
        for i, b in enumerate(bottom[1:], 1):
            if b is top[0]:
                raise self.config_error(f"top is {_bottom_name(self, i)}; only bottom[0] can share the top")
        self._mask = self._x0 = self._buf = None

    def reshape(self, bottom, top) -> None:
        shape = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != shape:
                raise self.shape_error(
                    f"{_bottom_name(self, i)} has shape {b.shape} but {_bottom_name(self, 0)} has {shape}; "
                    "Eltwise needs bottoms of one shape"
                )
        if top[0] is not bottom[0]:
            top[0].reshape(shape)
        self._buf = _scratch(self._buf, shape)
        if self.op == MAX:
            self._mask = _scratch(self._mask, shape, np.int32)
        if self.op == PROD and top[0] is bottom[0]:
            self._x0 = _scratch(self._x0, shape)  # in place, bottom 0's data is overwritten

    def forward(self, bottom, top) -> None:
        y = self._buf
        if self.op == SUM:
            np.multiply(bottom[0].data, self.coeff[0], out=y)
            for b, c in zip(bottom[1:], self.coeff[1:]):
                y += b.data * c if c != 1 else b.data
        elif self.op == PROD:
            if top[0] is bottom[0]:
                np.copyto(self._x0, bottom[0].data)
            np.multiply(bottom[0].data, bottom[1].data, out=y)
            for b in bottom[2:]:
                y *= b.data
        else:
            mask = self._mask
            first = bottom[1].data >= bottom[0].data  # a tie goes to bottom 1
            np.copyto(y, bottom[0].data)
            np.copyto(y, bottom[1].data, where=first)
            np.copyto(mask, first.astype(np.int32))
            for i, b in enumerate(bottom[2:], 2):
                larger = b.data > y
                np.copyto(y, b.data, where=larger)
                mask[larger] = i
        np.copyto(top[0].data, y)

    def _data(self, bottom, j: int) -> np.ndarray:
        return self._x0 if j == 0 and self._x0 is not None and self.op == PROD else bottom[j].data

    def backward(self, top, propagate_down, bottom) -> None:
        dy = top[0].diff
        # Bottom 0 last: in place its diff is the top diff.
        for i in sorted(range(len(bottom)), key=lambda j: j == 0):
            if not propagate_down[i]:
                continue
            dx = bottom[i].diff
            if self.op == SUM:
                np.multiply(dy, self.coeff[i], out=dx)
            elif self.op == PROD:
                g = self._buf
                if self.stable_prod_grad:
                    others = [j for j in range(len(bottom)) if j != i]
                    np.copyto(g, self._data(bottom, others[0]))
                    for j in others[1:]:
                        g *= self._data(bottom, j)
                else:
                    np.divide(top[0].data, self._data(bottom, i), out=g)
                np.multiply(g, dy, out=dx)
            else:
                np.multiply(dy, self._mask == i, out=dx)


@register_layer("Reduction")
class ReductionLayer(Layer):
    """Reduce all axes from ``axis`` on to one number per leading index.

    Bottom: x (d_0, ..., d_n).  Top: y (d_0, ..., d_{a-1}), a = ``axis`` (default 0: a
    scalar).  No blobs.
    Forward: y = coeff * op(x[i, ...]) with ``operation`` SUM (default), ASUM (sum of
    |x|), SUMSQ (sum of x^2) or MEAN (SUM divided by the reduced count); ``coeff`` default 1.
    Backward: dx = coeff * dy * (1, sign(x), 2x, 1/count) for (SUM, ASUM, SUMSQ, MEAN).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.reduction_param
        self.op = param.operation
        if top[0] is bottom[0]:
            raise self.config_error("Reduction cannot run in place; give its top another name")

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        axis = self.layer_param.reduction_param.axis
        if not -x.num_axes <= axis < max(x.num_axes, 1):
            raise self.shape_error(f"reduction_param.axis {axis} is out of range for bottom shape {x.shape}")
        axis = axis + x.num_axes if axis < 0 else axis
        self.num = x.count(0, axis)
        self.dim = x.count(axis)
        top[0].reshape(x.shape[:axis])
        coeff = np.float32(self.layer_param.reduction_param.coeff)
        if self.op == caffe_pb2.ReductionParameter.MEAN:
            coeff = coeff / np.float32(max(self.dim, 1))
        self.coeff = np.float32(coeff)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data.reshape(self.num, self.dim)
        y = top[0].data.reshape(self.num)
        op = self.op
        if op == caffe_pb2.ReductionParameter.ASUM:
            np.sum(np.abs(x), axis=1, out=y)
        elif op == caffe_pb2.ReductionParameter.SUMSQ:
            np.einsum("ij,ij->i", x, x, out=y)
        else:  # SUM and MEAN (its 1/count is in coeff)
            np.sum(x, axis=1, out=y)
        if self.coeff != 1:
            y *= self.coeff

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        x = bottom[0].data.reshape(self.num, self.dim)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        dy = top[0].diff.reshape(self.num, 1) * self.coeff
        op = self.op
        if op == caffe_pb2.ReductionParameter.ASUM:
            np.multiply(np.sign(x), dy, out=dx)
        elif op == caffe_pb2.ReductionParameter.SUMSQ:
            np.multiply(x, dy * np.float32(2), out=dx)
        else:
            dx[...] = dy


@register_layer("ArgMax", v1="ARGMAX")
class ArgMaxLayer(Layer):
    """The indices (and optionally values) of the ``top_k`` largest entries.

    Bottom: x.  No blobs.  Ties go to the larger index, as in Caffe's sort.
    With ``axis`` a: top = x's shape with ``top_k`` at a, holding the indices along a, or
    the values with ``out_max_val``.
    Without ``axis``: each item (all axes after the first) gives one row; top
    (N, 1, top_k) holding indices, or (N, 2, top_k) with ``out_max_val`` (indices, then
    values), with trailing 1s up to x's number of axes.
    No gradient (as in Caffe): asking for one is an error.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.argmax_param
        self.top_k = int(param.top_k)
        self.out_max_val = bool(param.out_max_val)
        self.has_axis = param.HasField("axis")
        if self.top_k < 1:
            raise self.config_error("argmax_param.top_k must be at least 1")
        if top[0] is bottom[0]:
            raise self.config_error("ArgMax cannot run in place; give its top another name")

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if self.has_axis:
            axis = self.layer_param.argmax_param.axis
            if not -x.num_axes <= axis < x.num_axes:
                raise self.shape_error(f"argmax_param.axis {axis} is out of range for bottom shape {x.shape}")
            self.axis = axis + x.num_axes if axis < 0 else axis
            dim = x.shape[self.axis]
            shape = list(x.shape)
            shape[self.axis] = self.top_k
        else:
            if x.num_axes < 1:
                raise self.shape_error("the bottom is a scalar; ArgMax needs at least one axis")
            dim = x.count(1)
            shape = [1] * max(x.num_axes, 3)
            shape[0] = x.shape[0]
            shape[1] = 2 if self.out_max_val else 1
            shape[2] = self.top_k
        if self.top_k > dim:
            raise self.shape_error(
                f"argmax_param.top_k {self.top_k} exceeds the {dim} values it chooses from "
                f"(bottom shape {x.shape})"
            )
        top[0].reshape(shape)

    def _top_k(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices and values of the k largest along the last axis, ties to the larger index."""
        dim = values.shape[-1]
        # Sorting the reversed array stably puts, among equal values, the larger index first.
        order = np.argsort(-values[..., ::-1], axis=-1, kind="stable")[..., : self.top_k]
        index = dim - 1 - order
        return index, np.take_along_axis(values, index, axis=-1)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data
        if self.has_axis:
            index, value = self._top_k(np.moveaxis(x, self.axis, -1))
            out = value if self.out_max_val else index
            top[0].data[...] = np.moveaxis(out, -1, self.axis)
            return
        index, value = self._top_k(x.reshape(x.shape[0], -1))
        y = top[0].data.reshape(x.shape[0], -1, self.top_k)
        y[:, 0] = index
        if self.out_max_val:
            y[:, 1] = value

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            raise self.config_error("ArgMax has no gradient; set propagate_down: false for its bottom")


@register_layer("Filter")
class FilterLayer(Layer):
    """Keep the items whose selector is non-zero.

    Bottoms: x_1..x_k (N, ...), then the selector s (N,) or (N, 1, ...) (last).
    Tops: y_1..y_k (M, ...), M = the number of non-zero s (the full N at set-up, before any
    data is seen, as in Caffe).  No blobs.
    Forward: y_i = x_i[s != 0].  Backward: dx_i = dy_i at the kept items, 0 elsewhere; the
    selector takes no gradient.
    """

    min_num_bottom = 2
    min_num_top = 1

    def setup(self, bottom, top) -> None:
        if len(top) != len(bottom) - 1:
            raise self.config_error(
                f"{len(bottom)} bottoms need {len(bottom) - 1} tops (one per filtered bottom; the last "
                f"bottom is the selector), got {len(top)}"
            )
        self._first_reshape = True
        self.keep = None
        self._selector_index = len(bottom) - 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != self._selector_index

    def reshape(self, bottom, top) -> None:
        selector = bottom[-1]
        if selector.num_axes == 0 or any(d != 1 for d in selector.shape[1:]):
            raise self.shape_error(
                f"the selector {_bottom_name(self, len(bottom) - 1)} has shape {selector.shape}; it "
                "must be (N,) or (N, 1, ...)"
            )
        n = selector.shape[0]
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes == 0 or b.shape[0] != n:
                raise self.shape_error(
                    f"{_bottom_name(self, i)} has shape {b.shape} but the selector has {n} items; "
                    "the first dimensions must agree"
                )
        if self._first_reshape:
            self.keep = np.arange(n)
            self._first_reshape = False
        else:
            self.keep = np.flatnonzero(selector.data.reshape(n) != 0)
        for b, t in zip(bottom[:-1], top):
            if t is b:
                raise self.config_error("Filter cannot run in place; give its tops other names")
            t.reshape((self.keep.size,) + b.shape[1:])

    def forward(self, bottom, top) -> None:
        for b, t in zip(bottom[:-1], top):
            np.take(b.data, self.keep, axis=0, out=t.data)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[-1]:
            raise self.config_error("cannot backpropagate to the selector (the last bottom)")
        for b, t, down in zip(bottom[:-1], top, propagate_down):
            if down:
                b.diff[...] = 0
                b.diff[self.keep] = t.diff


@register_layer("BatchReindex")
class BatchReindexLayer(Layer):
    """Gather items of the batch by index (a permutation, a subset or repeats).

    Bottoms: x (N, ...), and the indices p (M,), integers in [0, N).
    Top: y (M, ...).  No blobs.
    Forward: y[i] = x[p[i]].  Backward: dx[j] = sum of dy[i] over the i with p[i] = j
    (repeated indices add up); the indices take no gradient.
    """

    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index != 1

    def setup(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.config_error("BatchReindex cannot run in place; give its top another name")

    def reshape(self, bottom, top) -> None:
        x, p = bottom
        if p.num_axes != 1:
            raise self.shape_error(f"the indices {_bottom_name(self, 1)} have shape {p.shape}; they must be 1-d (M,)")
        if x.num_axes == 0:
            raise self.shape_error(f"{_bottom_name(self, 0)} is a scalar; it needs a batch axis")
        top[0].reshape((p.shape[0],) + x.shape[1:])

    def forward(self, bottom, top) -> None:
        x, p = bottom
        self.index = _indices(self, p.data, x.shape[0], "index")
        np.take(x.data, self.index, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[1]:
            raise self.config_error("cannot backpropagate to the indices (bottom[1])")
        if propagate_down[0]:
            dx = bottom[0].diff
            dx[...] = 0
            np.add.at(dx, self.index, top[0].diff)


@register_layer("Parameter")
class ParameterLayer(Layer):
    """Expose a learned blob as a top (e.g. a bias or an embedding used by several layers).

    No bottoms.  Top: y, shape ``parameter_param.shape``, sharing the storage (data and
    diff) of the layer's one blob, so consumers' gradients land in the parameter.
    Blobs: the parameter (zeros unless loaded from a caffemodel).
    Forward: y = blob.  Backward: dblob = dy (shared storage).
    """

    exact_num_bottom = 0
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        shape = tuple(int(d) for d in self.layer_param.parameter_param.shape.dim)
        if any(d < 0 for d in shape):
            raise self.config_error(f"parameter_param.shape {shape} has a negative dimension")
        self.init_param_blobs([shape], [None])

    def reshape(self, bottom, top) -> None:
        blob = self.blobs[0]
        top[0].reshape(blob.shape)
        top[0].share_data(blob)
        top[0].share_diff(blob)

    def forward(self, bottom, top) -> None:
        top[0].share_data(self.blobs[0])

    def backward(self, top, propagate_down, bottom) -> None:
        # Shared since reshape; copy (accumulating, it is a parameter) only if re-pointed.
        if self.param_propagate_down[0] and not np.shares_memory(top[0].diff, self.blobs[0].diff):
            self.blobs[0].diff += top[0].diff


@register_layer("Silence", v1="SILENCE")
class SilenceLayer(Layer):
    """Consume blobs nobody else reads, so the net does not list them as outputs.

    Bottoms: any number (>= 1).  No tops, no blobs.
    Forward: nothing.  Backward: dx = 0 for every bottom (it contributes no loss).
    """

    min_num_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top) -> None:
        pass

    def forward(self, bottom, top) -> None:
        pass

    def backward(self, top, propagate_down, bottom) -> None:
        for b, down in zip(bottom, propagate_down):
            if down:
                b.diff[...] = 0


@register_layer("Embed")
class EmbedLayer(Layer):
    """Look up a learned vector for each index (a one-hot InnerProduct without the product).

    Bottom: indices (any shape), integers in [0, K), K = ``input_dim``.
    Top: y (bottom shape..., N), N = ``num_output``.
    Blobs: W (K, N) from ``weight_filler``; b (N,) from ``bias_filler`` if ``bias_term``.
    Forward: y[..., :] = W[index] + b.
    Backward: dW[index] += dy (repeated indices add up); db += sum dy; the indices take
    no gradient.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    def setup(self, bottom, top) -> None:
        param = self.layer_param.embed_param
        self.N = int(param.num_output)
        self.K = int(param.input_dim)
        if self.N <= 0:
            raise self.config_error("embed_param.num_output must be set to a positive number")
        if self.K <= 0:
            raise self.config_error("embed_param.input_dim (the number of indices) must be set to a positive number")
        if top[0] is bottom[0]:
            raise self.config_error("Embed cannot run in place; give its top another name")
        self.bias_term = bool(param.bias_term)
        shapes, fillers = [(self.K, self.N)], [param.weight_filler]
        if self.bias_term:
            shapes.append((self.N,))
            fillers.append(param.bias_filler)
        self.init_param_blobs(shapes, fillers)

    def reshape(self, bottom, top) -> None:
        self.M = bottom[0].count()
        top[0].reshape(bottom[0].shape + (self.N,))

    def forward(self, bottom, top) -> None:
        self.index = _indices(self, bottom[0].data, self.K, "index")
        if self.index.size and not np.array_equal(self.index, bottom[0].data.ravel()):
            raise DataError(f"{self.describe()}: the indices must be whole numbers")
        y = top[0].data.reshape(self.M, self.N)
        np.take(self.blobs[0].data, self.index, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            raise self.config_error("cannot backpropagate to the indices (bottom[0])")
        dy = top[0].diff.reshape(self.M, self.N)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self.index, dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0, dtype=np.float32)

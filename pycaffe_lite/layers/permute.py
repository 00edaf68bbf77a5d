"""Permute: reorder the axes of a blob (a pycaffe_lite extension; SSD's Caffe has the same
layer type and ``permute_param { order }`` field, so its prototxts read unchanged)."""

from __future__ import annotations

import numpy as np

from ..layer import Layer
from ..registry import register_layer


@register_layer("Permute")
class PermuteLayer(Layer):
    """Transpose the axes: top axis i is bottom axis ``order[i]``.

    ``permute_param { order: ... }`` lists bottom axes (0-based, no repeats); the axes not
    listed follow in their original order, so ``order: 1`` alone swaps the first two axes of
    any blob (SSD's rule).  E.g. images read row by row: Reshape (N, 1, 28, 28) -> (N, 28, 28),
    then ``order: 1 order: 0`` gives the time-major (T = 28, N, 28) a recurrent layer takes.
    Bottom: x (d_0, ..., d_{n-1}).  Top: y (d_{order[0]}, ..., d_{order[n-1]}).  No blobs.
    Forward: y = x.transpose(order) (a copy).  Backward: dx = dy.transpose(inverse order).
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.config_error("Permute cannot run in place; give its top another name")

    def _order(self, x) -> tuple[int, ...]:
        listed = [int(a) for a in self.layer_param.permute_param.order]
        for a in listed:
            if a >= x.num_axes:
                raise self.shape_error(
                    f"permute_param.order names axis {a} but the bottom has {x.num_axes} axes (shape {x.shape})"
                )
        if len(set(listed)) != len(listed):
            raise self.config_error(f"permute_param.order {listed} repeats an axis")
        return tuple(listed) + tuple(a for a in range(x.num_axes) if a not in listed)

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        self.order = self._order(x)
        self.inverse = tuple(int(a) for a in np.argsort(self.order))
        top[0].reshape(tuple(x.shape[a] for a in self.order))

    def forward(self, bottom, top) -> None:
        top[0].data[...] = bottom[0].data.transpose(self.order)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.transpose(self.inverse)

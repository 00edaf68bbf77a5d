"""Layers that only rearrange or route blobs: Flatten, Split.

Both share storage instead of copying, as Caffe does: a Flatten top is a view of
its bottom (data and diff), and Split tops are views of the bottom's data.
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

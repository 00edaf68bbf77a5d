"""Crop: cut a window of the first bottom to the shape of the second (FCN's alignment layer)."""
from __future__ import annotations

from ..layer import Layer
from ..registry import register_layer


@register_layer("Crop")
class CropLayer(Layer):
    """Crop bottom 0 to bottom 1's shape from ``crop_param.axis`` on.

    Bottom: x (d_0, ..., d_{k-1}), the data; r, a reference of at least k axes whose shape is the
    target (its values are never read).  Top: y with y.shape[i] = d_i for i < axis and
    r.shape[i] for i >= axis (``axis`` default 2, negative counts from the end).
    ``offset``: none (all 0), one value for every cropped axis, or one per cropped axis.
    Forward: y = x[..., o_a : o_a + r_a, ...].  Backward: dx = 0 outside the window, dy inside;
    r gets a zero gradient.  As in Caffe, every axis -- cropped or not -- must satisfy
    d_i - o_i >= r.shape[i].  No blobs.
    Long, Shelhamer & Darrell, "Fully Convolutional Networks for Semantic Segmentation" (CVPR 2015).
    """

    exact_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        self.offset = [int(o) for o in self.layer_param.crop_param.offset]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return bottom_index == 0  # the reference only gives a shape

    def reshape(self, bottom, top) -> None:
        x, ref = bottom
        n = x.num_axes
        axis = int(self.layer_param.crop_param.axis)
        if not -n <= axis < n:
            raise self.config_error(f"crop_param.axis {axis} is out of range for bottom '{x.name}' {x.shape}")
        axis = axis + n if axis < 0 else axis
        num_cropped = n - axis
        if len(self.offset) > 1 and len(self.offset) != num_cropped:
            raise self.config_error(
                f"{len(self.offset)} offsets given; give one for all cropped axes or one per cropped axis "
                f"({num_cropped}: axes {axis}..{n - 1} of {x.shape})"
            )
        if ref.num_axes < n:
            raise self.shape_error(
                f"reference bottom '{ref.name}' {ref.shape} has fewer axes than the data '{x.name}' {x.shape}"
            )
        offsets, shape = [], []
        for i in range(n):
            o, size = 0, x.shape[i]
            if i >= axis and self.offset:
                o = self.offset[0] if len(self.offset) == 1 else self.offset[i - axis]
            if i >= axis:
                size = ref.shape[i]
            if x.shape[i] - o < ref.shape[i]:
                raise self.shape_error(
                    f"cannot crop axis {i}: '{x.name}' {x.shape} minus offset {o} is smaller than "
                    f"'{ref.name}' {ref.shape} ({x.shape[i]} - {o} < {ref.shape[i]})"
                )
            offsets.append(o)
            shape.append(size)
        self.window = tuple(slice(o, o + s) for o, s in zip(offsets, shape))
        top[0].reshape(shape)

    def forward(self, bottom, top) -> None:
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            dx = bottom[0].diff
            dx[...] = 0
            dx[self.window] = top[0].diff
        if len(propagate_down) > 1 and propagate_down[1]:
            bottom[1].diff[...] = 0

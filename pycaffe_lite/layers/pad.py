"""Pad: a constant border around the two spatial axes."""

from __future__ import annotations

from ..layer import Layer
from ..registry import register_layer


@register_layer("Pad")
class PadLayer(Layer):
    """Constant padding of the last two axes.

    Bottom: x (..., H, W), at least 2 axes.  Top: y (..., t + H + b, l + W + r).  No blobs.
    ``pad_param.pad``: 1 value (every side), 2 (height, width) or 4 (top, bottom, left,
    right); ``value``: the border (default 0).
    Forward: y = value; y[..., t:t+H, l:l+W] = x.
    Backward: dx = dy[..., t:t+H, l:l+W] (the border is constant).
    Use: LeNet-5's 32x32 input field, MNIST's 28x28 digits padded by 2 with the background
    value (LeCun et al. 1998), which a Convolution's zero padding cannot give.
    """

    exact_num_bottom = 1
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.pad_param
        pads = [int(v) for v in p.pad]
        if len(pads) == 1:
            pads *= 4
        elif len(pads) == 2:
            pads = [pads[0], pads[0], pads[1], pads[1]]
        elif len(pads) != 4:
            raise self.config_error(
                f"pad_param.pad has {len(pads)} values; give 1 (every side), 2 (height, width) or "
                "4 (top, bottom, left, right)"
            )
        self.top_pad, self.bottom_pad, self.left_pad, self.right_pad = pads
        self.value = float(p.value)

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes < 2:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape}; Pad needs at least 2 axes (..., H, W)")
        *lead, H, W = x.shape
        top[0].reshape(tuple(lead) + (self.top_pad + H + self.bottom_pad, self.left_pad + W + self.right_pad))

    def _inner(self, arr, shape):
        H, W = shape[-2:]
        return arr[..., self.top_pad:self.top_pad + H, self.left_pad:self.left_pad + W]

    def forward(self, bottom, top) -> None:
        y = top[0].data
        y.fill(self.value)
        self._inner(y, bottom[0].shape)[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            bottom[0].diff[...] = self._inner(top[0].diff, bottom[0].shape)

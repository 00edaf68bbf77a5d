"""ScaledTanH: LeCun's squashing function A tanh(S a)."""

from __future__ import annotations

import numpy as np

from ..registry import register_layer
from .neuron import NeuronLayer, _scratch


@register_layer("ScaledTanH")
class ScaledTanHLayer(NeuronLayer):
    """Scaled hyperbolic tangent.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: y = A tanh(S x), A = ``amplitude`` (default 1.7159), S = ``slope`` (default 2/3):
    then f(1) = 1, f(-1) = -1, and the gain is largest around the +-1 targets.
    Backward: dx = dy * (S / A) (A^2 - y^2) (reads only the top, so in place works).
    References: LeCun, Bottou, Bengio & Haffner (Proc. IEEE 1998), appendix A;
    LeCun, Bottou, Orr & Mueller, "Efficient BackProp" (1998).
    """

    def setup(self, bottom, top) -> None:
        p = self.layer_param.scaled_tanh_param
        self.amplitude = float(p.amplitude)
        self.slope = float(p.slope)
        if self.amplitude == 0:
            raise self.config_error("scaled_tanh_param.amplitude must be non-zero")
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        y = top[0].data
        np.multiply(bottom[0].data, np.float32(self.slope), out=y)
        np.tanh(y, out=y)
        y *= np.float32(self.amplitude)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        y = top[0].data
        slope = np.multiply(y, y, out=self._buf)
        np.subtract(np.float32(self.amplitude * self.amplitude), slope, out=slope)
        slope *= np.float32(self.slope / self.amplitude)
        np.multiply(top[0].diff, slope, out=bottom[0].diff)

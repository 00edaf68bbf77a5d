"""More element-wise neuron layers: PReLU, ELU, AbsVal, Power, Exp, Log, BNLL, Threshold, Clip, Swish.

Each takes one bottom and gives one top of the same shape (``NeuronLayer``).  All but AbsVal may
run in place, as in Caffe.  Where Caffe's backward reads the bottom data (and so gives wrong
gradients in place, e.g. Clip, Power, Log), these layers keep what backward needs during forward
-- a mask, the inner term, or a copy of x like Caffe's PReLU -- so in place and out of place
give identical results.
"""

from __future__ import annotations

import math

import numpy as np

from ..layer import Layer
from ..registry import register_layer
from .neuron import NeuronLayer, _scratch


def adopt_stored_shapes(layer: Layer, shapes) -> None:
    """Reshape parameter blobs loaded from a caffemodel to ``shapes`` when only the shape's
    spelling differs (same count): Caffe stores a 0-axis blob with no shape, which reads back
    as (1,), and older files spell (C,) as (1, 1, 1, C)."""
    for b, s in zip(layer.blobs, shapes):
        if b.shape != tuple(s) and b.count() == math.prod(s):
            b.reshape(tuple(s))


@register_layer("PReLU")
class PReLULayer(NeuronLayer):
    """Parametric ReLU: a learned negative slope per channel (or one for all).

    Bottom: x (N, C, ...), at least 2 axes.  Top: y, same shape.
    Blobs: a (C,), or () with ``channel_shared``; filled by ``prelu_param.filler``, default
    constant 0.25.
    Forward: y = max(x, 0) + a_c min(x, 0).
    Backward: da_c += sum over all but the channel axis of dy x [x <= 0];
    dx = dy (1 if x > 0 else a_c).  In place, forward keeps a copy of x first (as Caffe does).
    He, Zhang, Ren & Sun, "Delving Deep into Rectifiers" (ICCV 2015).
    """

    def setup(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes < 2:
            raise self.shape_error(f"bottom '{x.name}' has shape {x.shape}; PReLU needs at least 2 axes (N, C, ...)")
        p = self.layer_param.prelu_param
        self.channel_shared = bool(p.channel_shared)
        self.channels = x.shape[1]
        shape = () if self.channel_shared else (self.channels,)
        if p.HasField("filler"):
            filler = p.filler
        else:
            from ..proto import caffe_pb2

            filler = caffe_pb2.FillerParameter(type="constant", value=0.25)
        adopt_stored_shapes(self, [shape])
        self.init_param_blobs([shape], [filler])
        self._saved: np.ndarray | None = None
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        if x.num_axes < 2 or x.shape[1] != self.channels:
            raise self.shape_error(
                f"bottom '{x.name}' has shape {x.shape} but the layer was set up for {self.channels} channels"
            )
        super().reshape(bottom, top)
        if top[0] is x:
            self._saved = _scratch(self._saved, x.shape)
        self._buf = _scratch(self._buf, x.shape)

    def _slope(self, ndim: int) -> np.ndarray:
        a = self.blobs[0].data
        return a if self.channel_shared else a.reshape((1, self.channels) + (1,) * (ndim - 2))

    def forward(self, bottom, top) -> None:
        x, y = bottom[0].data, top[0].data
        if top[0] is bottom[0]:
            np.copyto(self._saved, x)
            x = self._saved
        neg = np.minimum(x, 0, out=self._buf)
        neg *= self._slope(x.ndim)
        np.maximum(x, 0, out=y)
        y += neg

    def backward(self, top, propagate_down, bottom) -> None:
        x = self._saved if top[0] is bottom[0] else bottom[0].data
        dy = top[0].diff
        buf = self._buf
        if self.param_propagate_down[0]:
            # before dx: in place, dx overwrites dy
            np.minimum(x, 0, out=buf)  # x [x <= 0]
            buf *= dy
            axes = None if self.channel_shared else (0,) + tuple(range(2, x.ndim))
            self.blobs[0].diff += buf.sum(axis=axes, dtype=np.float32)
        if propagate_down[0]:
            buf[...] = self._slope(x.ndim)
            np.copyto(buf, 1.0, where=x > 0)
            np.multiply(dy, buf, out=bottom[0].diff)


@register_layer("ELU")
class ELULayer(NeuronLayer):
    """Exponential linear unit.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: y = x if x > 0 else alpha (exp(x) - 1)   (``elu_param.alpha``, default 1).
    Backward: dx = dy if x > 0 else dy (y + alpha).  The sign of x is kept as a mask, so in
    place works for any alpha.
    Clevert, Unterthiner & Hochreiter, "Fast and Accurate Deep Network Learning by
    Exponential Linear Units (ELUs)" (ICLR 2016).
    """

    def setup(self, bottom, top) -> None:
        self.alpha = float(self.layer_param.elu_param.alpha)
        self._mask: np.ndarray | None = None
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._mask = _scratch(self._mask, bottom[0].shape, np.bool_)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        x, y = bottom[0].data, top[0].data
        np.greater(x, 0, out=self._mask)  # before y overwrites x in place
        neg = np.minimum(x, 0, out=self._buf)
        np.expm1(neg, out=neg)  # expm1: exact near 0, where exp(x) - 1 cancels
        neg *= np.float32(self.alpha)
        np.maximum(x, 0, out=y)
        y += neg

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        factor = np.add(top[0].data, np.float32(self.alpha), out=self._buf)
        np.copyto(factor, 1.0, where=self._mask)
        np.multiply(top[0].diff, factor, out=bottom[0].diff)


@register_layer("AbsVal", v1="ABSVAL")
class AbsValLayer(NeuronLayer):
    """Absolute value.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: y = |x|.  Backward: dx = sign(x) dy, sign(0) = 0.
    Not in place (Caffe refuses it too: backward needs the sign of x).
    """

    def setup(self, bottom, top) -> None:
        if top[0] is bottom[0]:
            raise self.config_error("AbsVal cannot run in place (as in Caffe); give the top its own name")
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        np.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        sign = np.sign(bottom[0].data, out=self._buf)
        np.multiply(top[0].diff, sign, out=bottom[0].diff)


@register_layer("Power", v1="POWER")
class PowerLayer(NeuronLayer):
    """Power: y = (shift + scale x)^power.

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    ``power_param``: power (1), scale (1), shift (0).
    Backward: dx = dy power scale (shift + scale x)^(power - 1); a constant when power is 1 or
    power * scale is 0 (Caffe's special cases).  Computed from the inner term directly, where
    Caffe divides y by it (0/0 at shift + scale x = 0).  The inner term is kept from forward,
    so in place works.
    """

    def setup(self, bottom, top) -> None:
        p = self.layer_param.power_param
        self.power = float(p.power)
        self.scale = float(p.scale)
        self.shift = float(p.shift)
        self.diff_scale = self.power * self.scale
        self._inner: np.ndarray | None = None
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._inner = _scratch(self._inner, bottom[0].shape)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        y = top[0].data
        if self.diff_scale == 0:  # y does not depend on x
            y.fill(1.0 if self.power == 0 else self.shift ** self.power)
            return
        inner = np.multiply(bottom[0].data, np.float32(self.scale), out=self._inner)
        if self.shift != 0:
            inner += np.float32(self.shift)
        if self.power == 1:
            np.copyto(y, inner)
        else:
            np.power(inner, np.float32(self.power), out=y)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.diff_scale == 0 or self.power == 1:
            np.multiply(dy, np.float32(self.diff_scale), out=dx)
            return
        if self.power == 2:
            slope = np.multiply(self._inner, np.float32(self.diff_scale), out=self._buf)
        else:
            slope = np.power(self._inner, np.float32(self.power - 1), out=self._buf)
            slope *= np.float32(self.diff_scale)
        np.multiply(dy, slope, out=dx)


def _log_base(layer: Layer, base: float) -> float:
    """ln(base), with base -1 meaning e; base must be > 0 (and != 1 where it divides)."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise layer.config_error(f"base must be strictly positive (or -1 for e), got {base}")
    return math.log(base)


@register_layer("Exp", v1="EXP")
class ExpLayer(NeuronLayer):
    """Exponential: y = base^(shift + scale x)  (base -1 means e).

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    ``exp_param``: base (-1), scale (1), shift (0).
    Forward: y = base^shift exp(ln(base) scale x).  Backward: dx = dy y ln(base) scale (reads
    only the top, so in place works).
    """

    def setup(self, bottom, top) -> None:
        p = self.layer_param.exp_param
        log_base = _log_base(self, float(p.base))
        self.inner_scale = log_base * float(p.scale)
        self.outer_scale = 1.0 if p.shift == 0 else math.exp(log_base * float(p.shift))

    def forward(self, bottom, top) -> None:
        y = top[0].data
        np.multiply(bottom[0].data, np.float32(self.inner_scale), out=y)
        np.exp(y, out=y)
        if self.outer_scale != 1:
            y *= np.float32(self.outer_scale)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        np.multiply(top[0].diff, top[0].data, out=dx)
        if self.inner_scale != 1:
            dx *= np.float32(self.inner_scale)


@register_layer("Log")
class LogLayer(NeuronLayer):
    """Logarithm: y = log_base(shift + scale x)  (base -1 means e).

    Bottom: x (any shape; shift + scale x > 0).  Top: y, same shape.  No blobs.
    ``log_param``: base (-1), scale (1), shift (0).
    Backward: dx = dy scale / ((shift + scale x) ln(base)).  The inner term is kept from
    forward, so in place works.
    """

    def setup(self, bottom, top) -> None:
        p = self.layer_param.log_param
        log_base = _log_base(self, float(p.base))
        if log_base == 0:
            raise self.config_error("base 1 has no logarithm; use a base > 0 other than 1, or -1 for e")
        self.base_scale = 1.0 / log_base
        self.scale = float(p.scale)
        self.shift = float(p.shift)
        self._inner: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._inner = _scratch(self._inner, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        inner = np.multiply(bottom[0].data, np.float32(self.scale), out=self._inner)
        if self.shift != 0:
            inner += np.float32(self.shift)
        y = top[0].data
        np.log(inner, out=y)
        if self.base_scale != 1:
            y *= np.float32(self.base_scale)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        np.divide(top[0].diff, self._inner, out=dx)
        factor = self.scale * self.base_scale
        if factor != 1:
            dx *= np.float32(factor)


@register_layer("BNLL", v1="BNLL")
class BNLLLayer(NeuronLayer):
    """Binomial normal log likelihood ("softplus"): y = log(1 + exp(x)).

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: computed as logaddexp(0, x), which cannot overflow.
    Backward: dx = dy sigmoid(x) = dy (1 - exp(-y)), evaluated as -expm1(-y): exact from the
    top alone, so in place works.
    """

    def setup(self, bottom, top) -> None:
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        np.logaddexp(np.float32(0.0), bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        sig = np.negative(top[0].data, out=self._buf)
        np.expm1(sig, out=sig)
        np.negative(sig, out=sig)
        np.multiply(top[0].diff, sig, out=bottom[0].diff)


@register_layer("Threshold", v1="THRESHOLD")
class ThresholdLayer(NeuronLayer):
    """Step function: y = 1 if x > threshold else 0  (``threshold_param.threshold``, default 0).

    Bottom: x (any shape).  Top: y, same shape.  No blobs.  In place works.
    No gradient (as in Caffe): backward raises when asked to propagate.
    """

    def setup(self, bottom, top) -> None:
        self.threshold = float(self.layer_param.threshold_param.threshold)

    def forward(self, bottom, top) -> None:
        np.greater(bottom[0].data, np.float32(self.threshold), out=top[0].data, casting="unsafe")

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            raise self.config_error(
                "Threshold has no gradient (Caffe's neither); keep it out of the backward path, e.g. "
                "with propagate_down: false on the layer that consumes it"
            )


@register_layer("Clip")
class ClipLayer(NeuronLayer):
    """Clip to [min, max]: y = max(min, min(x, max)).

    Bottom: x (any shape).  Top: y, same shape.  No blobs.  ``clip_param``: min, max (both
    required, min <= max).
    Backward: dx = dy where min <= x <= max, else 0 (Caffe's rule: the bounds pass the
    gradient).  The mask is kept from forward, so in place works.
    """

    def setup(self, bottom, top) -> None:
        p = self.layer_param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.config_error("clip_param needs both min and max")
        self.min, self.max = float(p.min), float(p.max)
        if self.min > self.max:
            raise self.config_error(f"clip_param.min ({self.min}) is greater than max ({self.max})")
        self._mask: np.ndarray | None = None
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._mask = _scratch(self._mask, bottom[0].shape, np.bool_)
        self._buf = _scratch(self._buf, bottom[0].shape, np.bool_)

    def forward(self, bottom, top) -> None:
        x = bottom[0].data
        inside = np.greater_equal(x, np.float32(self.min), out=self._mask)
        inside &= np.less_equal(x, np.float32(self.max), out=self._buf)
        np.clip(x, np.float32(self.min), np.float32(self.max), out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if propagate_down[0]:
            np.multiply(top[0].diff, self._mask, out=bottom[0].diff)


@register_layer("Swish")
class SwishLayer(NeuronLayer):
    """Swish: y = x sigmoid(beta x)  (``swish_param.beta``, default 1).

    Bottom: x (any shape).  Top: y, same shape.  No blobs.
    Forward: s = sigmoid(beta x) as Caffe's Sigmoid computes it, 0.5 tanh(0.5 beta x) + 0.5.
    Backward: dx = dy (beta y + s (1 - beta y)) (s is kept, so in place works).
    Ramachandran, Zoph & Le, "Searching for Activation Functions" (2017).
    """

    def setup(self, bottom, top) -> None:
        self.beta = float(self.layer_param.swish_param.beta)
        self._sig: np.ndarray | None = None
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        super().reshape(bottom, top)
        self._sig = _scratch(self._sig, bottom[0].shape)
        self._buf = _scratch(self._buf, bottom[0].shape)

    def forward(self, bottom, top) -> None:
        s = np.multiply(bottom[0].data, np.float32(0.5 * self.beta), out=self._sig)
        np.tanh(s, out=s)
        s *= np.float32(0.5)
        s += np.float32(0.5)
        np.multiply(bottom[0].data, s, out=top[0].data)

    def backward(self, top, propagate_down, bottom) -> None:
        if not propagate_down[0]:
            return
        # beta y + s (1 - beta y) = s + beta y (1 - s)
        factor = np.subtract(np.float32(1.0), self._sig, out=self._buf)
        factor *= top[0].data
        factor *= np.float32(self.beta)
        factor += self._sig
        np.multiply(top[0].diff, factor, out=bottom[0].diff)

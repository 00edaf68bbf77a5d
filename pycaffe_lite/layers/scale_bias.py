"""Bias and Scale: a learned (or second-bottom) tensor broadcast over part of the input's axes.

Both follow Caffe's broadcasting rule.  The operand b has shape
``x.shape[axis : axis + b.num_axes]``; seeing x as (outer, dim, inner) with
``outer = prod(x.shape[:axis])``, ``dim = b.count()`` and ``inner`` the rest, b acts as
(1, dim, 1).  A 0-axis (scalar) operand ignores ``axis``.  A learned operand takes its shape from
``axis`` and ``num_axes`` (-1: to the last axis; 0: a scalar).  The usual case after BatchNorm is
axis 1, num_axes 1: one value per channel.
"""
from __future__ import annotations

import math

import numpy as np

from ..blob import Blob
from ..layer import Layer
from ..registry import register_layer
from .neuron_extra import adopt_stored_shapes


def _canonical_axis(layer: Layer, axis: int, blob: Blob, what: str) -> int:
    n = blob.num_axes
    if not -n <= axis < max(n, 1):
        raise layer.config_error(f"{what} axis {axis} is out of range for bottom '{blob.name}' {blob.shape}")
    return axis + n if axis < 0 else axis


def learned_shape(layer: Layer, x: Blob, axis: int, num_axes: int, what: str) -> tuple[int, ...]:
    """The shape of a learned operand: x.shape[axis : axis + num_axes] (num_axes -1: to the end)."""
    axis = _canonical_axis(layer, axis, x, what)
    if num_axes < -1:
        raise layer.config_error(f"{what} num_axes must be >= 0, or -1 to extend to the last axis; got {num_axes}")
    if num_axes >= 0 and axis + num_axes > x.num_axes:
        raise layer.shape_error(
            f"a {what} of {num_axes} axes from axis {axis} extends past bottom '{x.name}' {x.shape}"
        )
    return tuple(x.shape[axis:] if num_axes == -1 else x.shape[axis:axis + num_axes])


def broadcast_dims(layer: Layer, x: Blob, operand: Blob, axis: int, what: str) -> tuple[int, int, int]:
    """(outer, dim, inner) of x for ``operand`` applied from ``axis``; checks the shapes agree."""
    axis = 0 if operand.num_axes == 0 else _canonical_axis(layer, axis, x, what)
    span = x.shape[axis:axis + operand.num_axes]
    if axis + operand.num_axes > x.num_axes or tuple(span) != operand.shape:
        raise layer.shape_error(
            f"{what} '{operand.name}' has shape {operand.shape} but bottom '{x.name}' {x.shape} has "
            f"{tuple(span)} at axes {axis}..{axis + operand.num_axes - 1}; they must be equal"
        )
    return math.prod(x.shape[:axis]), operand.count(), math.prod(x.shape[axis + operand.num_axes:])


@register_layer("Bias")
class BiasLayer(Layer):
    """Add a broadcast bias: y = x + b.

    Bottom: x; optionally b, the bias, as a second bottom.  Top: y, the shape of x.
    Blobs: b (learned, when there is one bottom), shape from ``bias_param`` axis / num_axes
    (see the module docstring), filled by ``bias_param.filler`` (default constant 0).
    Backward: dx = dy;  db (+)= sum of dy over the outer and inner axes.  In place works.
    """

    min_num_bottom = 1
    max_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.bias_param
        if len(bottom) == 1:
            shape = learned_shape(self, bottom[0], int(p.axis), int(p.num_axes), "bias")
            adopt_stored_shapes(self, [shape])
            self.init_param_blobs([shape], [p.filler])  # an unset filler is constant 0
        self._buf: np.ndarray | None = None

    def reshape(self, bottom, top) -> None:
        bias = bottom[1] if len(bottom) > 1 else self.blobs[0]
        self.dims = broadcast_dims(self, bottom[0], bias, int(self.layer_param.bias_param.axis), "bias")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top) -> None:
        outer, dim, inner = self.dims
        bias = (bottom[1] if len(bottom) > 1 else self.blobs[0]).data
        np.add(bottom[0].data.reshape(outer, dim, inner), bias.reshape(1, dim, 1),
               out=top[0].data.reshape(outer, dim, inner))

    def backward(self, top, propagate_down, bottom) -> None:
        outer, dim, inner = self.dims
        dy = top[0].diff
        if propagate_down[0] and bottom[0] is not top[0]:
            np.copyto(bottom[0].diff, dy)
        dy3 = dy.reshape(outer, dim, inner)
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff.reshape(dim)[...] = dy3.sum(axis=(0, 2), dtype=np.float32)
        elif self.param_propagate_down[0]:
            self.blobs[0].diff.reshape(dim)[...] += dy3.sum(axis=(0, 2), dtype=np.float32)


@register_layer("Scale")
class ScaleLayer(Layer):
    """Multiply by a broadcast scale, then optionally add a bias: y = x s (+ b).

    Bottom: x; optionally s, the scale, as a second bottom.  Top: y, the shape of x.
    Blobs: s (learned, when there is one bottom; shape from ``scale_param`` axis / num_axes,
    filled by ``filler``, default constant 1), then b if ``bias_term`` (the shape of s, filled
    by ``bias_filler``, default constant 0) -- Caffe's order, so BatchNorm+Scale zoo models load.
    Backward: ds (+)= sum over outer and inner axes of dy x;  db += same sum of dy;  dx = dy s.
    In place keeps a copy of x for ds (as Caffe does).
    """

    min_num_bottom = 1
    max_num_bottom = 2
    exact_num_top = 1

    def setup(self, bottom, top) -> None:
        p = self.layer_param.scale_param
        axis = int(p.axis)
        shapes, fillers = [], []
        if len(bottom) == 1:
            shapes.append(learned_shape(self, bottom[0], axis, int(p.num_axes), "scale"))
            if p.HasField("filler"):
                fillers.append(p.filler)
            else:
                from ..proto import caffe_pb2

                fillers.append(caffe_pb2.FillerParameter(type="constant", value=1.0))
        self.bias_term = bool(p.bias_term)
        if self.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else int(p.num_axes)
            shapes.append(learned_shape(self, bottom[0], axis, num_axes, "bias"))
            fillers.append(p.bias_filler)
        adopt_stored_shapes(self, shapes)
        self.init_param_blobs(shapes, fillers)
        self._saved: np.ndarray | None = None
        self._prod: np.ndarray | None = None

    def _scale(self, bottom) -> Blob:
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top) -> None:
        x = bottom[0]
        axis = int(self.layer_param.scale_param.axis)
        self.dims = broadcast_dims(self, x, self._scale(bottom), axis, "scale")
        if self.bias_term:
            broadcast_dims(self, x, self.blobs[-1], axis, "bias")
        if top[0] is not x:
            top[0].reshape_like(x)
        shape = x.shape
        if top[0] is x and (self._saved is None or self._saved.shape != shape):
            self._saved = np.empty(shape, np.float32)
        if self._prod is None or self._prod.shape != shape:
            self._prod = np.empty(shape, np.float32)

    def forward(self, bottom, top) -> None:
        outer, dim, inner = self.dims
        x = bottom[0].data
        if top[0] is bottom[0]:
            np.copyto(self._saved, x)  # ds needs x after y has overwritten it
        y3 = top[0].data.reshape(outer, dim, inner)
        np.multiply(x.reshape(outer, dim, inner), self._scale(bottom).data.reshape(1, dim, 1), out=y3)
        if self.bias_term:
            y3 += self.blobs[-1].data.reshape(1, dim, 1)

    def backward(self, top, propagate_down, bottom) -> None:
        outer, dim, inner = self.dims
        dy3 = top[0].diff.reshape(outer, dim, inner)
        # parameter and scale gradients first: in place, dx overwrites dy
        if self.bias_term and self.param_propagate_down[-1]:
            self.blobs[-1].diff.reshape(dim)[...] += dy3.sum(axis=(0, 2), dtype=np.float32)
        scale = self._scale(bottom)
        learned = len(bottom) == 1
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            x = self._saved if top[0] is bottom[0] else bottom[0].data
            prod = np.multiply(dy3, x.reshape(outer, dim, inner), out=self._prod.reshape(outer, dim, inner))
            ds = prod.sum(axis=(0, 2), dtype=np.float32)
            if learned:
                scale.diff.reshape(dim)[...] += ds
            else:
                scale.diff.reshape(dim)[...] = ds
        if propagate_down[0]:
            np.multiply(dy3, scale.data.reshape(1, dim, 1), out=bottom[0].diff.reshape(outer, dim, inner))

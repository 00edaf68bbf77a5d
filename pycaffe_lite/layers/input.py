"""Layers that produce blobs from their parameters: Input, DummyData."""

from __future__ import annotations

from ..filler import fill
from ..layer import Layer
from ..proto import caffe_pb2
from ..registry import register_layer


@register_layer("Input")
class InputLayer(Layer):
    """Declares the net's input blobs; the user (or the caller) writes their data.

    Bottom: none.  Tops: one per input, shaped by ``input_param.shape`` (one shape for
    every top, or one per top; none leaves the tops as they are).  No blobs.
    Forward: nothing.  The shapes are set once; later reshapes by the user stick.
    """

    exact_num_bottom = 0
    min_num_top = 1

    def setup(self, bottom, top) -> None:
        shapes = self.layer_param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.config_error(
                f"input_param gives {len(shapes)} shapes for {len(top)} tops; give one shape for "
                "all tops, one per top, or none"
            )
        for i, t in enumerate(top):
            if shapes:
                t.reshape(tuple(int(d) for d in shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top) -> None:
        pass

    def forward(self, bottom, top) -> None:
        pass


@register_layer("DummyData", v1="DUMMY_DATA")
class DummyDataLayer(Layer):
    """Blobs filled by fillers: for tests, timing, and nets fed from outside.

    Bottom: none.  Tops: shaped by ``dummy_data_param.shape`` (one for all tops or one
    per top) or the legacy ``num``/``channels``/``height``/``width`` (each given once
    or once per top).  No blobs.
    Forward: top_i = data_filler_i (one filler for all tops, one per top, or none =
    constant 0).  As in Caffe, tops with a constant filler are filled once at set-up;
    the others are refilled from the shared RNG on every forward.
    """

    exact_num_bottom = 0
    min_num_top = 1

    def setup(self, bottom, top) -> None:
        param = self.layer_param.dummy_data_param
        num_top = len(top)
        fillers = list(param.data_filler)
        if len(fillers) not in (0, 1, num_top):
            raise self.config_error(
                f"{len(fillers)} data_filler for {num_top} tops; give none (constant 0), "
                "one for all tops, or one per top"
            )
        legacy = {name: list(getattr(param, name)) for name in ("num", "channels", "height", "width")}
        if any(legacy.values()):
            if len(param.shape):
                raise self.config_error(
                    "give either 'shape' or the legacy num/channels/height/width, not both"
                )
            for name, values in legacy.items():
                if len(values) not in (1, num_top):
                    raise self.config_error(
                        f"give '{name}' once, or once per top ({num_top}); it is given {len(values)} times"
                    )
            shapes = [
                tuple(
                    int(legacy[n][0 if len(legacy[n]) == 1 else i])
                    for n in ("num", "channels", "height", "width")
                )
                for i in range(num_top)
            ]
        else:
            if len(param.shape) not in (1, num_top):
                raise self.config_error(
                    f"give 'shape' once, or once per top ({num_top}); it is given {len(param.shape)} times"
                )
            shapes = [
                tuple(int(d) for d in param.shape[0 if len(param.shape) == 1 else i].dim)
                for i in range(num_top)
            ]
        if not fillers:
            fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        self.fillers = [fillers[0 if len(fillers) == 1 else i] for i in range(num_top)]
        # Constant fillers fill once here; the others refill on every forward.
        self.refill = [f.type != "constant" for f in self.fillers]
        for t, shape, filler, refill in zip(top, shapes, self.fillers, self.refill, strict=True):
            t.reshape(shape)
            if not refill:
                fill(t, filler)

    def reshape(self, bottom, top) -> None:
        pass

    def forward(self, bottom, top) -> None:
        for t, filler, refill in zip(top, self.fillers, self.refill, strict=True):
            if refill:
                fill(t, filler)

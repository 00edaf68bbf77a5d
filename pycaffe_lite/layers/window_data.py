"""WindowData: R-CNN's window-file reader, which pycaffe_lite does not provide."""
from __future__ import annotations

from ..layer import Layer
from ..registry import register_layer


@register_layer("WindowData", v1="WINDOW_DATA")
class WindowDataLayer(Layer):
    """Not supported: building a net with it raises a NetConfigError that says what to use instead.

    Caffe's WindowData crops foreground/background windows out of images listed in an
    R-CNN window file.  Registered so that such nets (e.g. the Pascal fine-tuning example)
    parse and fail with a clear message rather than "unknown layer type".
    """

    exact_num_bottom = 0

    def setup(self, bottom, top) -> None:
        raise self.config_error(
            "WindowData (R-CNN's window-file reader) is not supported by pycaffe_lite; crop the windows "
            "into image files and read them with an ImageData layer (`plite data imageset` makes an LMDB "
            "of them for a Data layer), or feed them from a Python layer"
        )

    def reshape(self, bottom, top) -> None:  # never reached: setup raises
        raise self.config_error("not supported")

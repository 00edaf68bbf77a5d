"""MemoryData: batches from arrays given in Python (``net.set_input_arrays``)."""
from __future__ import annotations

import numpy as np

from ..errors import DataError, ShapeError
from ..layer import Layer
from ..registry import register_layer


@register_layer("MemoryData", v1="MEMORY_DATA")
class MemoryDataLayer(Layer):
    """Serve ``batch_size`` rows per forward pass from arrays set with :meth:`reset`.

    Bottom: none.  Top: data (B, C, H, W) = ``memory_data_param``'s batch_size,
    channels, height, width; label (B,).  No blobs, no backward.

    As in Caffe, the arrays are served as given (no ``transform_param``), in order,
    wrapping around: forward pass ``k`` returns rows ``[B*k, B*k + B) mod N``; ``N`` must
    be a multiple of ``B``.  pycaffe's ``net.set_input_arrays(data, labels)`` calls
    :meth:`reset`.
    """

    exact_num_bottom = 0
    exact_num_top = 2

    def setup(self, bottom, top) -> None:
        p = self.layer_param.memory_data_param
        self.batch_size, self.channels = int(p.batch_size), int(p.channels)
        self.height, self.width = int(p.height), int(p.width)
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise self.config_error(
                "memory_data_param batch_size, channels, height and width must all be given and positive; got "
                f"{self.batch_size}, {self.channels}, {self.height}, {self.width}"
            )
        self.data: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.pos = 0

    def reshape(self, bottom, top) -> None:
        top[0].reshape(self.batch_size, self.channels, self.height, self.width)
        top[1].reshape(self.batch_size)

    def reset(self, data, labels) -> None:
        """Serve ``data`` (N, C, H, W) and ``labels`` (N,) or (N, 1, 1, 1) from the next forward on.

        Raises
        ------
        ShapeError
            Shapes that do not match ``memory_data_param``, or N not a multiple of batch_size.
        """
        data = np.asarray(data, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.float32)
        expected = (self.channels, self.height, self.width)
        if data.ndim != 4 or data.shape[1:] != expected:
            raise self.shape_error(
                f"data must be (N, {self.channels}, {self.height}, {self.width}) as memory_data_param says, "
                f"got {data.shape}"
            )
        n = data.shape[0]
        if labels.size != n or (labels.ndim > 1 and labels.shape[1:] != (1,) * (labels.ndim - 1)):
            raise self.shape_error(f"labels must be (N,) or (N, 1, 1, 1) with N = {n}, got {labels.shape}")
        if n == 0 or n % self.batch_size:
            raise self.shape_error(f"the number of rows ({n}) must be a positive multiple of batch_size "
                                   f"{self.batch_size}")
        self.data = np.ascontiguousarray(data)
        self.labels = np.ascontiguousarray(labels.reshape(n))
        self.pos = 0

    def set_batch_size(self, batch_size: int) -> None:
        """pycaffe's ``layer.set_batch_size``: change B before data is set (or on data it divides)."""
        batch_size = int(batch_size)
        if batch_size <= 0:
            raise self.config_error(f"batch size must be positive, got {batch_size}")
        if self.data is not None and len(self.data) % batch_size:
            raise ShapeError(f"{self.describe()}: {len(self.data)} rows are not a multiple of batch size {batch_size}")
        self.batch_size = batch_size
        self.pos = 0

    def forward(self, bottom, top) -> None:
        if self.data is None:
            raise DataError(
                f"{self.describe()}: no data yet; call net.set_input_arrays(data, labels) (MemoryDataLayer.reset) "
                "before the forward pass"
            )
        B = self.batch_size
        top[0].reshape(B, self.channels, self.height, self.width)
        top[1].reshape(B)
        top[0].data[...] = self.data[self.pos:self.pos + B]
        top[1].data[...] = self.labels[self.pos:self.pos + B]
        self.pos = (self.pos + B) % len(self.data)

"""Blob: the n-d float32 array pair (data, diff) that layers read and write."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import ShapeError

MAX_BLOB_AXES = 32


#: byte boundary of blob storage and kernel scratch: one cache line, so a 64-byte vector load
#: from the start of a row never straddles two lines (NumPy's own allocations are 16-byte aligned;
#: the direct convolution ran CIFAR-10 quick's conv1 forward 1.30 -> 1.09 ms on 64-byte-aligned
#: buffers)
ALIGN = 64


def aligned_zeros(n: int, zero: bool = True) -> np.ndarray:
    """A float32 vector of ``n`` elements whose first element sits on an ``ALIGN``-byte boundary
    (zero-filled unless ``zero`` is False)."""
    extra = ALIGN // 4
    raw = np.zeros(n + extra, np.float32) if zero else np.empty(n + extra, np.float32)
    start = (-(raw.ctypes.data // 4)) % extra
    return raw[start:start + n]


class BlobCount(int):
    """``blob.count``: the number of elements, an ``int`` as pycaffe's property is, that can
    also be called as Caffe's ``count(start, end)`` (the product of the axes in ``[start, end)``).
    """

    def __new__(cls, shape: tuple[int, ...]):
        n = 1
        for d in shape:
            n *= d
        self = super().__new__(cls, n)
        self.shape = shape
        return self

    def __call__(self, start: int = 0, end: int | None = None) -> int:
        if start == 0 and end is None:
            return int(self)
        n = 1
        for d in self.shape[start:end]:
            n *= d
        return n


class Blob:
    """An n-d array of float32 ``data`` with a matching ``diff`` (its gradient).

    As in Caffe, a blob keeps its storage when it is reshaped to a count it already
    holds, so reshaping every forward pass costs nothing; ``data``/``diff`` are
    NumPy views of that storage (write into them with ``blob.data[...] = x``).
    """

    __slots__ = ("_count", "_data", "_data_buf", "_diff", "_diff_buf", "_shape", "name")

    def __init__(self, shape: Iterable[int] = (), name: str = "") -> None:
        self.name = name
        self._shape: tuple[int, ...] = ()
        self._count = BlobCount(())
        self._data_buf = np.zeros(0, np.float32)
        self._diff_buf = np.zeros(0, np.float32)
        self._data = None
        self._diff = None
        self.reshape(shape)

    # --- shape -------------------------------------------------------------------
    def reshape(self, *shape) -> None:
        """Reshape to ``shape`` (a tuple or several ints); grows storage only when needed."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        shape = tuple(int(d) for d in shape)
        if len(shape) > MAX_BLOB_AXES:
            raise ShapeError(f"blob '{self.name}': {len(shape)} axes exceed the maximum of {MAX_BLOB_AXES}")
        if any(d < 0 for d in shape):
            raise ShapeError(f"blob '{self.name}': negative dimension in shape {shape}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count > self._data_buf.size:
            self._data_buf = aligned_zeros(count)
            self._diff_buf = aligned_zeros(count)
        if shape != self._shape:
            self._count = BlobCount(shape)
        self._shape = shape
        self._data = self._data_buf[:count].reshape(shape)
        self._diff = self._diff_buf[:count].reshape(shape)

    def reshape_like(self, other: Blob) -> None:
        self.reshape(other.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    @property
    def count(self) -> BlobCount:
        """Number of elements: ``blob.count`` (pycaffe) or ``blob.count()``; ``blob.count(start, end)``
        is the product of the dimensions in ``[start, end)`` (Caffe's ``count``)."""
        return self._count

    def canonical_axis_index(self, axis: int) -> int:
        """Map a possibly negative axis to ``[0, num_axes)``, with a clear error."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise ShapeError(f"blob '{self.name}': axis {axis} is out of range for shape {self._shape}")
        return axis + n if axis < 0 else axis

    def _legacy(self, index: int) -> int:
        if self.num_axes > 4:
            raise ShapeError(f"blob '{self.name}': legacy accessor used on a {self.num_axes}-axis blob")
        if index >= self.num_axes:
            return 1
        return self._shape[index]

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    # --- data ---------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value) -> None:
        self._data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self._diff

    @diff.setter
    def diff(self, value) -> None:
        self._diff[...] = value

    def share_data(self, other: Blob) -> None:
        """Use ``other``'s data storage (same count); Caffe's ShareData for Split/Flatten."""
        if other.count() != self.count():
            raise ShapeError(f"cannot share data of '{other.name}' {other.shape} with '{self.name}' {self.shape}")
        self._data_buf = other._data_buf
        self._data = other._data.reshape(self._shape)

    def share_diff(self, other: Blob) -> None:
        if other.count() != self.count():
            raise ShapeError(f"cannot share diff of '{other.name}' {other.shape} with '{self.name}' {self.shape}")
        self._diff_buf = other._diff_buf
        self._diff = other._diff.reshape(self._shape)

    def update(self) -> None:
        """data -= diff (the last step of a solver iteration)."""
        np.subtract(self._data, self._diff, out=self._data)

    def shape_string(self) -> str:
        return " ".join(str(d) for d in self._shape) + f" ({self.count()})"

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={self._shape})"

    # --- proto --------------------------------------------------------------------
    def to_proto(self, proto=None, write_diff: bool = False):
        """Fill (or create) a ``caffe.BlobProto`` with shape and float data."""
        from .proto import caffe_pb2

        proto = caffe_pb2.BlobProto() if proto is None else proto
        proto.Clear()
        proto.shape.dim.extend(self._shape)
        proto.data.extend(self._data.ravel().tolist())
        if write_diff:
            proto.diff.extend(self._diff.ravel().tolist())
        return proto

    def from_proto(self, proto, reshape: bool = True) -> None:
        """Load data (and diff if present) from a BlobProto, legacy 4-d fields included."""
        shape = proto_shape(proto)
        if reshape:
            self.reshape(shape)
        elif tuple(shape) != self._shape and not _legacy_match(shape, self._shape):
            raise ShapeError(f"blob '{self.name}': stored shape {tuple(shape)} does not match {self._shape}")
        data = proto_values(proto, "data")
        if data.size != self.count():
            raise ShapeError(f"blob '{self.name}': {data.size} stored values for shape {self._shape}")
        self._data[...] = data.reshape(self._shape)
        diff = proto_values(proto, "diff")
        if diff.size == self.count():
            self._diff[...] = diff.reshape(self._shape)


def proto_shape(proto) -> tuple[int, ...]:
    """Shape of a BlobProto: ``shape.dim`` or the legacy num/channels/height/width."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return (len(proto.data) or len(proto.double_data),) if (proto.data or proto.double_data) else ()


def proto_values(proto, which: str) -> np.ndarray:
    """float32 values of ``data``/``diff`` (or the double_ variant) of a BlobProto."""
    values = getattr(proto, which)
    if len(values):
        return np.asarray(values, dtype=np.float32)
    dvalues = getattr(proto, "double_" + which)
    return np.asarray(dvalues, dtype=np.float32)


def _legacy_match(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Legacy 4-d shapes (1, 1, N, K) match (N, K) as in Caffe's ShapeEquals."""
    if len(a) != 4 or len(b) > 4:
        return False
    padded = (1,) * (4 - len(b)) + tuple(b)
    return tuple(a) == padded

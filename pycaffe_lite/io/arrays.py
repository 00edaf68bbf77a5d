"""pycaffe's ``caffe.io`` array conversions: ndarray <-> BlobProto and Datum.

The Datum side reuses :mod:`pycaffe_lite.data.datum`; these keep pycaffe's signatures
(``datum_to_array`` returns the array only; ``array_to_datum(arr, label=None)``).
"""
from __future__ import annotations

import numpy as np

from ..blob import proto_shape, proto_values
from ..data import datum as _datum
from ..errors import DataError


def array_to_blobproto(arr, diff=None):
    """A ``caffe.BlobProto`` with ``arr``'s shape and values (and ``diff`` if given)."""
    from ..proto import caffe_pb2

    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise DataError(f"array_to_blobproto: diff has shape {diff.shape} but the data has {arr.shape}")
        blob.diff.extend(diff.astype(np.float32).ravel().tolist())
    return blob


def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """The data (or diff) of a BlobProto as a float32 array of its shape (legacy
    num/channels/height/width shapes included)."""
    shape = proto_shape(blob)
    values = proto_values(blob, "diff" if return_diff else "data")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if values.size != count:
        raise DataError(f"BlobProto of shape {tuple(shape)} holds {values.size} "
                        f"{'diff' if return_diff else 'data'} values, expected {count}")
    return values.reshape(shape)


def array_to_datum(arr, label: int | None = None):
    """A ``caffe.Datum`` from a ``C x H x W`` array: uint8 as bytes, anything else as floats."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DataError(f"array_to_datum needs a C x H x W array, got shape {arr.shape}")
    return _datum.array_to_datum(arr, 0 if label is None else label)


def datum_to_array(datum) -> np.ndarray:
    """The ``C x H x W`` array of a Datum (uint8 for byte records, float32 for float_data)."""
    return _datum.datum_to_array(datum)[0]

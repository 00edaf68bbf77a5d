"""The image mean: compute it from an LMDB, save it as a binaryproto, load it back.

Like Caffe's compute_image_mean, the mean is per pixel over all records, stored as a
BlobProto with the legacy 4-d fields ``num = 1, channels, height, width`` and float
``data``.  Sums are accumulated exactly (float64) and divided in float32, which gives
Caffe's values bit for bit while its float32 sums are exact (fewer than 2^24 / 255
= 65,793 uint8 records).
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)


def compute_mean(lmdb_path: str):
    """Per-pixel mean of every record of an LMDB of Datums, as a caffe.BlobProto (1, C, H, W).

    Raises
    ------
    DataError
        Missing or empty database, corrupt record, or records of different shapes.
    """
    from ..proto import caffe_pb2
    from .lmdb_source import iter_records

    total = None
    n = 0
    for chunk in iter_records(lmdb_path):
        if total is None:
            total = np.zeros(chunk.shape[1:], np.float64)
        for arr in chunk:  # one record at a time, in key order, as Caffe adds them
            np.add(total, arr, out=total)
        n += len(chunk)
    if n == 0:
        raise DataError(f"LMDB '{lmdb_path}' is empty")
    mean = total.astype(np.float32) / np.float32(n)  # float32 division, as Caffe's
    C, H, W = mean.shape
    proto = caffe_pb2.BlobProto()
    proto.num, proto.channels, proto.height, proto.width = 1, C, H, W
    proto.data.extend(mean.ravel().tolist())
    for c in range(C):
        log.info("mean_value channel [%d]: %g", c, float(mean[c].mean(dtype=np.float64)))
    return proto


def save_mean(proto, path: str) -> None:
    """Write a BlobProto to ``path`` atomically (a temporary file renamed over it)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(proto.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_mean(path: str) -> np.ndarray:
    """Read a mean binaryproto into a float32 (C, H, W) array.

    Accepts Caffe's legacy 4-d fields or ``shape``; a leading num of 1 is dropped.

    Raises
    ------
    DataError
        The file is missing, is not a BlobProto, or does not hold one (C, H, W) image.
    """
    from google.protobuf.message import DecodeError

    from ..blob import proto_shape, proto_values
    from ..proto import caffe_pb2

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(
            f"mean file '{path}' does not exist; create it with tools/compute_image_mean.py <lmdb> {path}"
        )
    with open(path, "rb") as f:
        raw = f.read()
    proto = caffe_pb2.BlobProto()
    try:
        proto.ParseFromString(raw)
    except DecodeError as e:
        raise DataError(f"mean file '{path}' is not a BlobProto binaryproto ({e})") from e
    shape = tuple(int(d) for d in proto_shape(proto))
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) <= 0:
        raise DataError(f"mean file '{path}' holds a blob of shape {proto_shape(proto)}, expected (1, C, H, W)")
    values = proto_values(proto, "data")
    if values.size != int(np.prod(shape)):
        raise DataError(f"mean file '{path}': {values.size} values for shape {shape}; the file is corrupt")
    return values.reshape(shape)

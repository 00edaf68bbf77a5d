"""Binary caffemodel / solverstate / BlobProto files: read with clear errors, write atomically."""
from __future__ import annotations

import os
import tempfile

from google.protobuf.message import DecodeError

from ..errors import DataError


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename.

    A crash leaves either the old file or the new one, never a torn file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_message(path: str | os.PathLike, message, what: str):
    """Parse a binary protobuf file into ``message`` or raise DataError naming the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such {what} file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        message.ParseFromString(data)
    except DecodeError as e:
        raise DataError(f"{path}: not a valid {what} (corrupt or truncated file: {e})") from None
    return message


def read_caffemodel(path: str | os.PathLike):
    """Read a binary caffemodel (NetParameter); legacy V1 ``layers`` are upgraded."""
    from ..proto import caffe_pb2

    param = read_message(path, caffe_pb2.NetParameter(), "caffemodel")
    if len(param.layers) and not len(param.layer):
        from .prototxt import upgrade_v1_net

        param = upgrade_v1_net(param)
    if not len(param.layer):
        raise DataError(f"{os.fspath(path)}: the caffemodel holds no layers (is it a caffemodel?)")
    return param


def write_caffemodel(param, path: str | os.PathLike) -> None:
    atomic_write_bytes(param.SerializeToString(), path)

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


def is_binary_proto_file(path: str | os.PathLike) -> bool:
    """True for a binary protobuf (a caffemodel), False for text (a prototxt).

    ``.caffemodel``/``.binaryproto`` files are binary; otherwise a NUL byte or invalid
    UTF-8 in the first 64 KB says binary (a caffemodel's float weights always hold them).
    """
    path = os.fspath(path)
    if path.lower().endswith((".caffemodel", ".binaryproto")):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    if b"\0" in head:
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # a cut multi-byte character at the end is still text
    return False


def upgrade_caffemodel(in_path: str | os.PathLike, out_path: str | os.PathLike):
    """Rewrite a binary caffemodel in the current format (``plite upgrade`` on a V0/V1 file).

    Legacy ``layers`` (V1, or V0 inside V1) become ``layer`` with their blobs, as Caffe's
    upgrade_net_proto_binary does.  Returns the upgraded NetParameter.
    """
    from ..proto import caffe_pb2
    from .prototxt import upgrade_net

    param = read_message(in_path, caffe_pb2.NetParameter(), "caffemodel")
    if not len(param.layer) and not len(param.layers):
        raise DataError(f"{os.fspath(in_path)}: the caffemodel holds no layers (is it a caffemodel?)")
    upgrade_net(param, filename=os.fspath(in_path))
    write_caffemodel(param, out_path)
    return param

"""caffe.Datum <-> NumPy array.

A Datum holds one image as ``channels x height x width`` values: raw uint8 bytes in
``data``, or floats in ``float_data`` when ``data`` is empty, or an encoded image file
(JPEG/PNG) in ``data`` when ``encoded`` is set.
"""
from __future__ import annotations

import io

import numpy as np

from ..errors import DataError


def datum_to_array(datum, force_color: bool = False, force_gray: bool = False) -> tuple[np.ndarray, int]:
    """Return ``(array (C, H, W), label)`` for a caffe.Datum.

    The array is uint8 (a read-only view of ``datum.data``) for byte records and float32
    for ``float_data`` records.  Encoded records are decoded with Pillow when it is
    installed, in OpenCV's channel order (BGR) as Caffe does; ``force_color`` /
    ``force_gray`` are TransformationParameter's options for them.

    Raises
    ------
    DataError
        When the stored values do not fill ``channels x height x width``, or the record
        is encoded and Pillow is missing.
    """
    if datum.encoded:
        return _decode(datum, force_color, force_gray), int(datum.label)
    shape = (int(datum.channels), int(datum.height), int(datum.width))
    count = shape[0] * shape[1] * shape[2]
    if datum.data:
        if len(datum.data) != count:
            raise DataError(
                f"Datum says {shape[0]}x{shape[1]}x{shape[2]} = {count} values but holds {len(datum.data)} bytes"
            )
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape), int(datum.label)
    if len(datum.float_data) != count:
        raise DataError(
            f"Datum says {shape[0]}x{shape[1]}x{shape[2]} = {count} values but holds "
            f"{len(datum.float_data)} float_data values and no bytes"
        )
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape), int(datum.label)


def array_to_datum(arr: np.ndarray, label: int = 0):
    """Build a caffe.Datum from a (C, H, W) array (2-D arrays get C = 1).

    uint8 arrays go to ``data`` as raw bytes (what convert_mnist_data writes); any other
    dtype goes to ``float_data`` as float32.
    """
    from ..proto import caffe_pb2

    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"array_to_datum needs a (C, H, W) or (H, W) array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    datum.label = int(label)
    return datum


def _decode(datum, force_color: bool, force_gray: bool) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("encoded images need Pillow; not supported yet (pip install Pillow)") from None
    try:
        img = Image.open(io.BytesIO(datum.data))
        img.load()
    except Exception as e:  # Pillow raises many types for a bad file
        raise DataError(f"cannot decode the encoded image in a Datum: {e}") from e
    if force_gray or (not force_color and img.mode in ("L", "1", "I;16", "I", "F")):
        return np.asarray(img.convert("L"), dtype=np.uint8)[None].copy()
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    # Caffe decodes with OpenCV, which yields BGR; keep that order so means and weights agree.
    return np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))

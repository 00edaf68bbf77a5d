"""caffe.Datum <-> ndarray."""
from __future__ import annotations

import numpy as np
import pytest

from pycaffe_lite.data.datum import array_to_datum, datum_to_array
from pycaffe_lite.errors import DataError
from pycaffe_lite.proto import caffe_pb2


def test_uint8_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    datum = array_to_datum(arr, 7)
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 5, 4, 7)
    assert datum.data == arr.tobytes() and len(datum.float_data) == 0
    back, label = datum_to_array(caffe_pb2.Datum.FromString(datum.SerializeToString()))
    assert back.dtype == np.uint8 and label == 7
    np.testing.assert_array_equal(back, arr)


def test_float_round_trip_and_2d_input():
    arr = np.random.default_rng(1).standard_normal((6, 2)).astype(np.float32)
    datum = array_to_datum(arr, 3)
    assert (datum.channels, datum.height, datum.width) == (1, 6, 2) and not datum.data
    back, label = datum_to_array(datum)
    assert back.dtype == np.float32 and back.shape == (1, 6, 2) and label == 3
    np.testing.assert_array_equal(back[0], arr)


def test_size_mismatch_is_a_data_error():
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(DataError, match="4 values but holds 3 bytes"):
        datum_to_array(datum)
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, float_data=[1.0])
    with pytest.raises(DataError, match="1 float_data"):
        datum_to_array(datum)


def test_bad_array_rank():
    with pytest.raises(DataError, match=r"\(C, H, W\)"):
        array_to_datum(np.zeros((1, 1, 1, 1), np.uint8))


def test_encoded_png_is_decoded_to_bgr_chw():
    import io

    from PIL import Image

    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[0, 0] = (1, 2, 3)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    arr, label = datum_to_array(caffe_pb2.Datum(encoded=True, data=buf.getvalue(), label=4))
    assert label == 4 and arr.shape == (3, 2, 3)
    np.testing.assert_array_equal(arr[2], rgb[..., 0])  # BGR: red is the last channel, as Caffe stores it
    assert tuple(arr[:, 0, 0]) == (3, 2, 1)


def test_corrupt_encoded_record_is_a_data_error():
    with pytest.raises(DataError):
        datum_to_array(caffe_pb2.Datum(encoded=True, data=b"\x89PNG not really"))

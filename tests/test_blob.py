import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import ShapeError
from pycaffe_lite.proto import caffe_pb2


def test_reshape_keeps_storage_when_it_fits():
    b = Blob((2, 3, 4))
    assert b.count() == 24 and b.count(1) == 12 and b.count(1, 2) == 3
    b.data[...] = 1
    buf = b.data.base if b.data.base is not None else b.data
    b.reshape(2, 3)
    assert b.shape == (2, 3)
    b.reshape((2, 3, 4))
    assert (b.data.base if b.data.base is not None else b.data) is buf


def test_legacy_accessors_and_axes():
    b = Blob((5, 2))
    assert (b.num, b.channels, b.height, b.width) == (5, 2, 1, 1)
    assert b.canonical_axis_index(-1) == 1
    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        b.canonical_axis_index(2)
    with pytest.raises(ShapeError, match="negative"):
        b.reshape(-1, 2)


def test_proto_round_trip_and_legacy_shape():
    b = Blob((2, 3), name="w")
    b.data[...] = np.arange(6).reshape(2, 3)
    b.diff[...] = 7
    p = b.to_proto(write_diff=True)
    c = Blob()
    c.from_proto(caffe_pb2.BlobProto.FromString(p.SerializeToString()))
    assert c.shape == (2, 3)
    np.testing.assert_array_equal(c.data, b.data)
    np.testing.assert_array_equal(c.diff, b.diff)
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3, data=list(range(6)))
    d = Blob((2, 3))
    d.from_proto(legacy, reshape=False)
    np.testing.assert_array_equal(d.data, b.data)


def test_update_and_sharing():
    a, b = Blob((3,)), Blob((3,))
    a.data[...] = 5
    a.diff[...] = 2
    a.update()
    np.testing.assert_array_equal(a.data, 3)
    b.share_data(a)
    a.data[0] = 9
    assert b.data[0] == 9
    with pytest.raises(ShapeError):
        Blob((4,)).share_data(a)


def test_storage_starts_on_a_cache_line():
    from pycaffe_lite.blob import ALIGN, aligned_zeros

    for shape in [(1,), (3, 5), (100, 3, 32, 32), (7, 11, 13)]:
        b = Blob(shape)
        assert b.data.ctypes.data % ALIGN == 0 and b.diff.ctypes.data % ALIGN == 0
        assert not b.data.any() and not b.diff.any()
    v = aligned_zeros(37, zero=False)
    assert v.size == 37 and v.dtype == np.float32 and v.ctypes.data % ALIGN == 0

"""compute_mean / save_mean / load_mean (Caffe's compute_image_mean)."""
from __future__ import annotations

import numpy as np
import pytest

from pycaffe_lite.data.mean import compute_mean, load_mean, save_mean
from pycaffe_lite.data.mnist import bundled_mnist_dir, convert_mnist, read_idx_images, write_datum_lmdb
from pycaffe_lite.errors import DataError
from pycaffe_lite.proto import caffe_pb2


def test_mean_of_mnist_digits(tmp_path):
    d = bundled_mnist_dir()
    db = str(tmp_path / "db")
    convert_mnist(d / "t10k-images-idx3-ubyte.gz", d / "t10k-labels-idx1-ubyte.gz", db, limit=200)
    proto = compute_mean(db)
    assert (proto.num, proto.channels, proto.height, proto.width) == (1, 1, 28, 28)
    images = read_idx_images(d / "t10k-images-idx3-ubyte.gz")[:200]
    expected = images.astype(np.float64).mean(axis=0)
    got = np.asarray(proto.data, np.float32).reshape(28, 28)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The exact float32 quotient, as Caffe divides its (here exact) float sums by the count.
    np.testing.assert_array_equal(got, images.sum(axis=0).astype(np.float32) / np.float32(200))


def test_save_load_round_trip(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (9, 3, 4, 5), dtype=np.uint8)
    db = str(tmp_path / "db")
    write_datum_lmdb(db, images, np.zeros(9))
    path = str(tmp_path / "mean.binaryproto")
    save_mean(compute_mean(db), path)
    mean = load_mean(path)
    assert mean.shape == (3, 4, 5) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, images.mean(axis=0), rtol=1e-6)
    assert not (tmp_path / "mean.binaryproto.tmp").exists()


def test_load_mean_with_shape_field(tmp_path):
    proto = caffe_pb2.BlobProto()
    proto.shape.dim.extend([1, 2, 1, 2])
    proto.data.extend([1, 2, 3, 4])
    path = str(tmp_path / "m")
    save_mean(proto, path)
    np.testing.assert_array_equal(load_mean(path), np.arange(1, 5, dtype=np.float32).reshape(2, 1, 2))


def test_load_mean_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist.*compute_image_mean"):
        load_mean(str(tmp_path / "missing"))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\xff\xff\xff")
    with pytest.raises(DataError, match="not a BlobProto"):
        load_mean(str(bad))
    proto = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2)
    proto.data.extend([1, 2, 3])
    save_mean(proto, str(tmp_path / "short"))
    with pytest.raises(DataError, match="3 values"):
        load_mean(str(tmp_path / "short"))
    proto = caffe_pb2.BlobProto(num=2, channels=1, height=1, width=1)
    proto.data.extend([1, 2])
    save_mean(proto, str(tmp_path / "two"))
    with pytest.raises(DataError, match="expected"):
        load_mean(str(tmp_path / "two"))


def test_compute_mean_missing_db(tmp_path):
    with pytest.raises(DataError, match="plite data mnist"):
        compute_mean(str(tmp_path / "nope"))

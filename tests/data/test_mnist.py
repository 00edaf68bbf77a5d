"""MNIST IDX -> LMDB conversion (Caffe's convert_mnist_data) and prepare_mnist."""
from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest

from pycaffe_lite.data.mnist import (
    bundled_mnist_dir,
    convert_mnist,
    prepare_mnist,
    read_idx_images,
    read_idx_labels,
)
from pycaffe_lite.errors import DataError
from pycaffe_lite.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[2]
N = 300


def bundled(name: str):
    return bundled_mnist_dir() / name


def write_idx_images(path: Path, images: np.ndarray, gz: bool = False) -> Path:
    raw = struct.pack(">IIII", 2051, *images.shape) + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def write_idx_labels(path: Path, labels: np.ndarray, gz: bool = False) -> Path:
    raw = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.fixture(scope="module")
def idx():
    return read_idx_images(bundled("train-images-idx3-ubyte.gz")), read_idx_labels(bundled("train-labels-idx1-ubyte.gz"))


@pytest.fixture(scope="module")
def train_db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mnist") / "train_lmdb")
    n = convert_mnist(bundled("train-images-idx3-ubyte.gz"), bundled("train-labels-idx1-ubyte.gz"), path, limit=N)
    assert n == N
    return path


def read_all(path: str) -> list[tuple[bytes, bytes]]:
    env = lmdb.open(path, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return list(txn.cursor())
    finally:
        env.close()


def test_bundled_idx_files(idx):
    images, labels = idx
    assert images.shape == (4000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (4000,) and set(np.unique(labels)) == set(range(10))
    test_images = read_idx_images(bundled("t10k-images-idx3-ubyte.gz"))
    assert test_images.shape == (1000, 28, 28)


def test_records_equal_idx_contents(train_db, idx):
    images, labels = idx
    records = read_all(train_db)
    assert [k for k, _ in records] == [b"%08d" % i for i in range(N)]
    datum = caffe_pb2.Datum()
    for i, (_, value) in enumerate(records):
        datum.ParseFromString(value)
        assert (datum.channels, datum.height, datum.width) == (1, 28, 28)
        assert not datum.encoded and len(datum.float_data) == 0
        assert datum.data == images[i].tobytes()
        assert datum.label == labels[i]


def test_value_bytes_match_caffe_field_order(train_db, idx):
    # Caffe serializes channels, height, width, data, label (label even when 0).
    images, labels = idx
    i = int(np.flatnonzero(labels[:N] == 0)[0])
    value = dict(read_all(train_db))[b"%08d" % i]
    expected = b"\x08\x01\x10\x1c\x18\x1c\x22\x90\x06" + images[i].tobytes() + b"\x28\x00"
    assert value == expected


def test_plain_and_gzipped_idx_read_the_same(tmp_path, idx):
    images, labels = idx
    for gz in (False, True):
        ip = write_idx_images(tmp_path / f"i{gz}", images[:10], gz)
        lp = write_idx_labels(tmp_path / f"l{gz}", labels[:10], gz)
        np.testing.assert_array_equal(read_idx_images(ip), images[:10])
        np.testing.assert_array_equal(read_idx_labels(lp), labels[:10])


def test_count_mismatch_is_a_data_error(tmp_path, idx):
    images, labels = idx
    ip = write_idx_images(tmp_path / "i", images[:10])
    lp = write_idx_labels(tmp_path / "l", labels[:9])
    with pytest.raises(DataError, match="10 images.*9 labels"):
        convert_mnist(ip, lp, str(tmp_path / "db"))
    assert not os.path.exists(tmp_path / "db")


def test_bad_magic_and_truncation(tmp_path, idx):
    images, labels = idx
    ip = write_idx_images(tmp_path / "i", images[:10])
    lp = write_idx_labels(tmp_path / "l", labels[:10])
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        convert_mnist(lp, ip, str(tmp_path / "db"))
    short = tmp_path / "short"
    short.write_bytes(ip.read_bytes()[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx_images(short)
    with pytest.raises(DataError, match="does not exist"):
        read_idx_images(tmp_path / "missing")


def test_refuses_to_overwrite_then_replaces(tmp_path, idx):
    images, labels = idx
    ip = write_idx_images(tmp_path / "i", images[:20])
    lp = write_idx_labels(tmp_path / "l", labels[:20])
    db = str(tmp_path / "db")
    convert_mnist(ip, lp, db, limit=5)
    with pytest.raises(DataError, match="already exists.*overwrite"):
        convert_mnist(ip, lp, db)
    assert len(read_all(db)) == 5
    convert_mnist(ip, lp, db, overwrite=True)
    assert len(read_all(db)) == 20
    assert sorted(os.listdir(tmp_path)) == ["db", "i", "l"]  # no .tmp / .old left behind


def test_prepare_mnist_bundled(tmp_path):
    train, test = prepare_mnist(tmp_path / "out", limit=7)
    assert (train, test) == (str(tmp_path / "out" / "mnist_train_lmdb"), str(tmp_path / "out" / "mnist_test_lmdb"))
    assert len(read_all(train)) == 7 and len(read_all(test)) == 7
    with pytest.raises(DataError, match="already exists"):
        prepare_mnist(tmp_path / "out")
    train, test = prepare_mnist(tmp_path / "out", overwrite=True)
    assert len(read_all(train)) == 4000 and len(read_all(test)) == 1000


def test_prepare_mnist_from_idx_dir(tmp_path, idx):
    images, labels = idx
    src = tmp_path / "idx"
    src.mkdir()
    write_idx_images(src / "train-images-idx3-ubyte", images[:12])
    write_idx_labels(src / "train-labels-idx1-ubyte.gz", labels[:12], gz=True)
    write_idx_images(src / "t10k-images.idx3-ubyte", images[12:20])  # the other common spelling
    write_idx_labels(src / "t10k-labels-idx1-ubyte", labels[12:20])
    train, test = prepare_mnist(tmp_path / "out", idx_dir=src)
    assert len(read_all(train)) == 12 and len(read_all(test)) == 8
    (src / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        prepare_mnist(tmp_path / "out2", idx_dir=src)


def test_tools_run_as_scripts(tmp_path):
    db = tmp_path / "db"
    mean = tmp_path / "mean.binaryproto"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable]  # run from another folder: the scripts must find the package themselves
    r = subprocess.run(
        cmd + [str(ROOT / "tools" / "convert_mnist_data.py"), str(bundled("t10k-images-idx3-ubyte.gz")),
               str(bundled("t10k-labels-idx1-ubyte.gz")), str(db), "--limit", "30"],
        check=False, capture_output=True, text=True, cwd=tmp_path, env=env,
    )
    assert r.returncode == 0, r.stderr
    assert len(read_all(str(db))) == 30
    r = subprocess.run(cmd + [str(ROOT / "tools" / "compute_image_mean.py"), str(db), str(mean)],
                       check=False, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert mean.stat().st_size > 28 * 28 * 4
    r = subprocess.run(cmd + [str(ROOT / "tools" / "compute_image_mean.py"), str(tmp_path / "nope")],
                       check=False, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 1 and "plite data mnist" in r.stderr

"""LMDBSource / DatumCursor: key order, wrap-around, resume, errors."""
from __future__ import annotations

import lmdb
import numpy as np
import pytest

from pycaffe_lite.data.datum import array_to_datum
from pycaffe_lite.data.lmdb_source import LMDBSource
from pycaffe_lite.data.mnist import write_datum_lmdb
from pycaffe_lite.errors import DataError

COUNT = 10
MODES = {"cached": {}, "streamed": {"cache_limit_bytes": 0}}


def put_all(path, items) -> str:
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k, v in items:
            txn.put(k, v)
    env.close()
    return str(path)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """COUNT records; record i is a 2x3x3 image filled with i, label 100 + i."""
    images = np.repeat(np.arange(COUNT, dtype=np.uint8), 18).reshape(COUNT, 2, 3, 3)
    path = str(tmp_path_factory.mktemp("src") / "db")
    write_datum_lmdb(path, images, np.arange(100, 100 + COUNT))
    return path


@pytest.mark.parametrize("mode", MODES)
def test_batches_wrap_around(db, mode):
    with LMDBSource(db, **MODES[mode]) as src:
        assert src.count == COUNT and src.record_shape == (2, 3, 3) and src.dtype == np.uint8
        cur = src.cursor()
        B = 4
        for n in range(7):
            data, labels = cur.next_batch(B)
            expected = (B * n + np.arange(B)) % COUNT
            np.testing.assert_array_equal(data[:, 0, 0, 0], expected)
            np.testing.assert_array_equal(labels, 100 + expected)
            assert data.shape == (B, 2, 3, 3)
            assert cur.position == (B * (n + 1)) % COUNT


@pytest.mark.parametrize("mode", MODES)
def test_batch_larger_than_database(db, mode):
    with LMDBSource(db, **MODES[mode]) as src:
        _, labels = src.cursor().next_batch(25)
        np.testing.assert_array_equal(labels, 100 + np.arange(25) % COUNT)


@pytest.mark.parametrize("mode", MODES)
def test_position_resume_is_exact(db, mode):
    with LMDBSource(db, **MODES[mode]) as src:
        cur = src.cursor()
        for _ in range(3):
            cur.next_batch(3)
        saved = cur.position
        first = [cur.next_batch(3)[1].copy() for _ in range(4)]
        other = src.cursor()
        other.position = saved
        second = [other.next_batch(3)[1].copy() for _ in range(4)]
        np.testing.assert_array_equal(first, second)
        other.position = 2 * COUNT + 7  # wraps
        assert other.position == 7
        np.testing.assert_array_equal(other.next_batch(2)[1], [107, 108])


def test_keys_are_read_in_byte_order(tmp_path):
    keys = [b"00000003", b"00000001", b"00000010", b"00000002"]
    path = put_all(tmp_path / "db", [(k, array_to_datum(np.zeros((1, 1, 1), np.uint8), int(k)).SerializeToString())
                                     for k in keys])
    with LMDBSource(path) as src:
        np.testing.assert_array_equal(src.cursor().next_batch(4)[1], [1, 2, 3, 10])


def test_float_records(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 1, 2, 2) / 7
    path = put_all(tmp_path / "db", [(b"%08d" % i, array_to_datum(values[i], i).SerializeToString())
                                     for i in range(3)])
    with LMDBSource(path) as src:
        data, _ = src.cursor().next_batch(3)
        assert data.dtype == np.float32
        np.testing.assert_array_equal(data, values)


def test_two_sources_on_one_database(db):
    a = LMDBSource(db)
    b = LMDBSource(db)  # LMDB forbids opening the same files twice; the env is shared
    a.close()
    np.testing.assert_array_equal(b.cursor().next_batch(2)[1], [100, 101])
    b.close()


def test_missing_path_says_how_to_create_it(tmp_path):
    missing = str(tmp_path / "mnist_train_lmdb")
    with pytest.raises(DataError) as e:
        LMDBSource(missing)
    assert missing in str(e.value) and "plite data mnist" in str(e.value)


def test_directory_without_data_mdb(tmp_path):
    with pytest.raises(DataError, match="not an LMDB"):
        LMDBSource(str(tmp_path))


def test_empty_database(tmp_path):
    path = put_all(tmp_path / "db", [])
    with pytest.raises(DataError, match="empty"):
        LMDBSource(path)


@pytest.mark.parametrize("mode", MODES)
def test_corrupt_value_names_path_and_key(tmp_path, mode):
    good = array_to_datum(np.zeros((1, 2, 2), np.uint8), 0).SerializeToString()
    path = put_all(tmp_path / "db", [(b"00000000", good), (b"00000001", good), (b"00000002", b"\xff\xff\xff\xff")])
    with pytest.raises(DataError) as e, LMDBSource(path, **MODES[mode]) as src:
        cur = src.cursor()
        cur.next_batch(3)
    assert path in str(e.value) and "'00000002'" in str(e.value) and "not a caffe.Datum" in str(e.value)


def test_first_value_not_a_datum(tmp_path):
    # Parses (wire-type mismatch becomes an unknown field) but holds no image.
    path = put_all(tmp_path / "db", [(b"a", b"\x0a\x00")])
    with pytest.raises(DataError, match="'a'.*empty Datum"):
        LMDBSource(path)


@pytest.mark.parametrize("mode", MODES)
def test_records_of_different_shapes(tmp_path, mode):
    path = put_all(tmp_path / "db", [
        (b"0", array_to_datum(np.zeros((1, 2, 2), np.uint8)).SerializeToString()),
        (b"1", array_to_datum(np.zeros((1, 3, 2), np.uint8)).SerializeToString()),
    ])
    with pytest.raises(DataError, match=r"'1' has shape \(1, 3, 2\).*\(1, 2, 2\)"), \
            LMDBSource(path, **MODES[mode]) as src:
        src.cursor().next_batch(2)

"""Read caffe.Datum records from an LMDB, a batch at a time, in key order.

:class:`LMDBSource` opens the database read-only; :class:`DatumCursor` walks it the
way Caffe's Data layer does: keys in byte order, wrapping to the first key after the
last, so item ``j`` of batch ``N`` (batch size ``B``) is record ``(B*N + j) mod count``.

A database whose decoded records fit in ``cache_limit_bytes`` (512 MB by default; MNIST
is 60,000 x 784 bytes) is decoded once into one ``(count, C, H, W)`` array, so a batch
is a slice (or, across the wrap-around, one fancy-index copy) instead of ``B`` protobuf
parses.  Larger ones are streamed through an LMDB cursor.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import ClassVar

import numpy as np

from ..errors import DataError
from .datum import datum_to_array

log = logging.getLogger(__name__)

#: databases whose decoded records fit in this many bytes are held in memory
CACHE_LIMIT_BYTES = 512 << 20

CREATE_HINT = "run `plite data mnist` (or tools/convert_mnist_data.py) to create it"


def _describe_path(path: str) -> str:
    absolute = os.path.abspath(path)
    return f"'{path}'" if absolute == path else f"'{path}' ({absolute})"


def _lmdb():
    try:
        import lmdb
    except ImportError:  # a declared dependency, but say what to do if it is missing
        raise DataError("reading LMDB needs the 'lmdb' package (pip install lmdb)") from None
    return lmdb


class _SharedEnv:
    """One open environment per set of files: LMDB forbids opening the same files twice in a
    process, and a train and a test net may read the same database.  Reference counted."""

    _open: ClassVar[dict[tuple, _SharedEnv]] = {}

    def __init__(self, key: tuple, env) -> None:
        self.key = key
        self.env = env
        self.refs = 0
        self.stamp: tuple[int, int] = (0, 0)
        #: decoded records, keyed by the decoding options
        self.cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def acquire(cls, path: str, subdir: bool) -> _SharedEnv:
        lmdb = _lmdb()
        st = os.stat(os.path.join(path, "data.mdb") if subdir else path)
        key = (st.st_dev, st.st_ino)  # what LMDB itself uses to spot a second open
        shared = cls._open.get(key)
        if shared is not None and shared.stamp != (st.st_mtime_ns, st.st_size):
            shared.cache.clear()  # written to since we decoded it
            shared.stamp = (st.st_mtime_ns, st.st_size)
        if shared is None:
            try:
                env = lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=subdir)
            except lmdb.Error as e:
                raise DataError(f"cannot open LMDB {_describe_path(path)}: {e}") from e
            shared = cls._open[key] = cls(key, env)
            shared.stamp = (st.st_mtime_ns, st.st_size)
        shared.refs += 1
        return shared

    def release(self) -> None:
        self.refs -= 1
        if self.refs <= 0:
            self._open.pop(self.key, None)
            self.env.close()


class LMDBSource:
    """A read-only LMDB of caffe.Datum values.

    Parameters
    ----------
    path : str
        The LMDB directory (the one holding ``data.mdb``), as in ``data_param.source``.
    cache_limit_bytes : int
        Decode the whole database into memory when its records take at most this many
        bytes (0 disables the cache).
    transform_param : caffe.TransformationParameter, optional
        Only ``force_color``/``force_gray`` are used, to decode encoded records.

    Raises
    ------
    DataError
        The path does not exist or is not an LMDB, the database is empty, or its first
        value is not a Datum.
    """

    def __init__(self, path: str, *, cache_limit_bytes: int = CACHE_LIMIT_BYTES, transform_param=None) -> None:
        self.path = os.fspath(path)
        self.force_color = bool(transform_param.force_color) if transform_param is not None else False
        self.force_gray = bool(transform_param.force_gray) if transform_param is not None else False
        if not os.path.exists(self.path):
            raise DataError(f"LMDB {_describe_path(self.path)} does not exist; {CREATE_HINT}")
        subdir = os.path.isdir(self.path)
        if subdir and not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise DataError(
                f"{_describe_path(self.path)} is a directory without data.mdb, so not an LMDB; {CREATE_HINT}"
            )
        self._shared = _SharedEnv.acquire(self.path, subdir)
        self.env = self._shared.env
        self.count = int(self.env.stat()["entries"])
        if self.count == 0:
            raise DataError(f"LMDB {_describe_path(self.path)} is empty (0 records); {CREATE_HINT}")
        self._txn = self.env.begin(buffers=False)
        cur = self._txn.cursor()
        cur.first()
        first_key, first_value = cur.item()
        self.first_key: bytes = first_key
        #: the first record decoded, its (C, H, W) shape and dtype describe every record
        self.first_array, self.first_label = self.decode(first_key, first_value)
        self.record_shape: tuple[int, int, int] = tuple(self.first_array.shape)
        self.dtype = self.first_array.dtype
        self.cache_limit_bytes = int(cache_limit_bytes)
        self._cache_key = (self.force_color, self.force_gray)

    # ---- decoding ---------------------------------------------------------------
    def decode(self, key: bytes, value: bytes, datum=None) -> tuple[np.ndarray, int]:
        """Parse one value as a Datum; errors name the database and the key."""
        from google.protobuf.message import DecodeError

        from ..proto import caffe_pb2

        datum = caffe_pb2.Datum() if datum is None else datum
        try:
            datum.ParseFromString(value)
        except DecodeError as e:
            raise DataError(
                f"LMDB {_describe_path(self.path)}: the value of key {key.decode(errors='replace')!r} "
                f"is not a caffe.Datum ({e}); recreate the database"
            ) from e
        try:
            arr, label = datum_to_array(datum, self.force_color, self.force_gray)
        except DataError as e:
            raise DataError(
                f"LMDB {_describe_path(self.path)}: key {key.decode(errors='replace')!r}: {e}"
            ) from e
        if arr.size == 0:
            raise DataError(
                f"LMDB {_describe_path(self.path)}: key {key.decode(errors='replace')!r} holds an empty Datum "
                f"(shape {arr.shape}); is this a Caffe Datum database?"
            )
        return arr, label

    # ---- the in-memory copy -----------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes all records take once decoded (assuming they share the first one's shape)."""
        return self.count * self.first_array.nbytes

    @property
    def cached(self) -> bool:
        return self.nbytes <= self.cache_limit_bytes

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """Decode every record once: ``(data (count, C, H, W), labels (count,) int64)``, read-only."""
        cached = self._shared.cache.get(self._cache_key)
        if cached is not None:
            return cached
        from ..proto import caffe_pb2

        data = np.empty((self.count, *self.record_shape), self.dtype)
        labels = np.empty(self.count, np.int64)
        datum = caffe_pb2.Datum()
        n = 0
        for key, value in self._txn.cursor():
            if n == self.count:  # cannot happen in a read-only snapshot; guard anyway
                break
            arr, labels[n] = self.decode(key, value, datum)
            if arr.shape != self.record_shape:
                raise self._shape_error(key, arr.shape)
            data[n] = arr
            n += 1
        if n != self.count:
            raise DataError(f"LMDB {_describe_path(self.path)}: stat says {self.count} records, read {n}")
        data.flags.writeable = False
        labels.flags.writeable = False
        # Shared by every source open on the same files (a train and a test net, say).
        self._shared.cache[self._cache_key] = (data, labels)
        log.info("Read %d records of shape %s from %s into memory (%.1f MB)",
                 self.count, self.record_shape, self.path, data.nbytes / 2**20)
        return data, labels

    def _shape_error(self, key: bytes, shape) -> DataError:
        return DataError(
            f"LMDB {_describe_path(self.path)}: key {key.decode(errors='replace')!r} has shape {tuple(shape)} "
            f"but the first record has {self.record_shape}; records of different sizes are not supported"
        )

    def cursor(self) -> DatumCursor:
        """A new batch cursor at the first record."""
        return DatumCursor(self)

    def close(self) -> None:
        """Release the database (other sources on the same files keep it open)."""
        if getattr(self, "_txn", None) is not None:
            self._txn.abort()
            self._txn = None
        if getattr(self, "_shared", None) is not None:
            self._shared.release()
            self._shared = None
            self.env = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown nothing useful can be done
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LMDBSource({self.path!r}, count={self.count}, shape={self.record_shape})"


class DatumCursor:
    """Batches of records in key order with wrap-around, and a resumable position.

    ``position`` is the index (in key order) of the next record to be read, in
    ``[0, count)``; setting it to ``n`` makes the next batch start at record ``n mod count``.
    """

    def __init__(self, source: LMDBSource) -> None:
        self.source = source
        self.count = source.count
        self._position = 0
        self._cache = source.load_all() if source.cached else None
        self._lmdb_cursor = None if self._cache is not None else source._txn.cursor()
        if self._lmdb_cursor is not None:
            self._lmdb_cursor.first()
        self._buf: tuple[np.ndarray, np.ndarray] | None = None
        self._index = None

    @property
    def position(self) -> int:
        return self._position

    @position.setter
    def position(self, n: int) -> None:
        n = int(n) % self.count
        if self._lmdb_cursor is not None:
            # Streaming: walk from the first key (LMDB has no seek-by-rank).
            self._lmdb_cursor.first()
            for _ in range(n):
                self._lmdb_cursor.next()
        self._position = n

    def next_batch(self, batch_size: int, out: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(data (B, C, H, W), labels (B,) int64)`` and advance by ``B``.

        The arrays may be read-only views of the cache or buffers reused by the next
        call: copy them to keep them.  ``out``, a ``(data, labels)`` pair of those shapes
        and dtypes, is where a streamed batch is decoded instead of the cursor's own
        buffers (a prefetching reader alternates two); a cached batch ignores it.
        """
        B = int(batch_size)
        start = self._position
        self._position = (start + B) % self.count
        if self._cache is not None:
            data, labels = self._cache
            if start + B <= self.count:
                return data[start:start + B], labels[start:start + B]
            if self._index is None or self._index.size != B:
                self._index = np.arange(B, dtype=np.intp)
            index = np.add(self._index, start)
            np.remainder(index, self.count, out=index)
            return data.take(index, axis=0), labels.take(index)
        return self._stream(B, out)

    def _stream(self, B: int, out: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        from ..proto import caffe_pb2

        src = self.source
        if out is None:
            if self._buf is None or self._buf[0].shape[0] != B:
                self._buf = (np.empty((B, *src.record_shape), src.dtype), np.empty(B, np.int64))
            out = self._buf
        data, labels = out
        cur = self._lmdb_cursor
        datum = caffe_pb2.Datum()
        for j in range(B):
            key, value = cur.item()
            arr, labels[j] = src.decode(key, value, datum)
            if arr.shape != src.record_shape:
                raise src._shape_error(key, arr.shape)
            data[j] = arr
            if not cur.next():
                cur.first()  # wrap around, as Caffe's Data layer does
        return data, labels


#: records decoded per chunk while accumulating
CHUNK = 512


def iter_records(db: str, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Every record of a Datum LMDB, as float64 ``(n, C, H, W)`` chunks in key order."""
    from ..proto import caffe_pb2

    with LMDBSource(db, cache_limit_bytes=0) as src:
        buf = np.empty((chunk, *src.record_shape), np.float64)
        datum = caffe_pb2.Datum()
        n = 0
        for key, value in src._txn.cursor():
            arr, _ = src.decode(key, value, datum)
            if arr.shape != src.record_shape:
                raise src._shape_error(key, arr.shape)
            buf[n] = arr
            n += 1
            if n == chunk:
                yield buf
                n = 0
        if n:
            yield buf[:n]

"""Data: batches of caffe.Datum records from an LMDB, transformed."""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..data import lmdb_source
from ..data.lmdb_source import LMDBSource
from ..data.transformer import DataTransformer
from ..errors import DataError
from ..layer import Layer
from ..registry import register_layer
from ..rng import get_rng

LEVELDB, LMDB = 0, 1

# Preprocessing fields that old nets put in data_param; Caffe moves them to transform_param.
_LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


@register_layer("Data", v1="DATA")
class DataLayer(Layer):
    """Read ``batch_size`` Datum records per forward pass from ``data_param.source``.

    Bottom: none.  Top: data (B, C, H', W') float32, transformed by ``transform_param``
    (``(x - mean) * scale``, then crop and mirror; see :mod:`pycaffe_lite.data.transformer`);
    optional label (B,).  No blobs, no backward.

    Records are read in key order and wrap around at the end, as in Caffe: item ``j`` of
    forward pass ``N`` is record ``(B*N + j) mod count`` (plus ``rand_skip``'s random start).
    ``get_position``/``set_position`` save and restore where the next batch starts.
    Only the LMDB backend exists.

    Prefetch (as Caffe's does): a database too large to hold decoded in memory is streamed, and
    then a background thread decodes the next batch while the net runs on this one (two buffers,
    one read in flight).  The thread only reads records in order; the transform (and its random
    crops and mirrors) stays in ``forward``, so batches, their order and the saved positions are
    the same with or without it.  A database held in memory needs none: a batch is a slice.
    ``close()`` stops the thread (garbage collection does too).
    """

    exact_num_bottom = 0
    min_num_top = 1
    max_num_top = 2

    def setup(self, bottom, top) -> None:
        p = self.layer_param.data_param
        self.source = p.source
        if not self.source:
            raise self.config_error("data_param.source is empty; give the path of an LMDB")
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.config_error("data_param.batch_size must be a positive integer")
        self._check_backend(p)
        transform_param = self._transform_param()
        try:
            self.db = LMDBSource(self.source, transform_param=transform_param,
                                 cache_limit_bytes=lmdb_source.CACHE_LIMIT_BYTES)
            self.cursor = self.db.cursor()
        except DataError as e:
            raise DataError(f"{self.describe()}: {e}") from e
        self.transformer = DataTransformer(transform_param, self.phase, self.db.record_shape, self.describe())
        self.output_labels = len(top) == 2
        self._next = 0  # the record the next batch starts with
        self._executor = self._pending = None
        if p.rand_skip:
            # Start at a random record so that parallel runs see different batches.
            skip = int(get_rng().integers(0, p.rand_skip))
            self.cursor.position = skip
            self._next = self.cursor.position
        if not self.db.cached:
            shape = (self.batch_size, *self.db.record_shape)
            self._buffers = [(np.empty(shape, self.db.dtype), np.empty(self.batch_size, np.int64)) for _ in range(2)]
            self._slot = 0
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"prefetch {self.layer_param.name}")
            self._prefetch()

    def _prefetch(self) -> None:
        """Start decoding the cursor's next batch into the free buffer pair, on the thread."""
        self._pending = self._executor.submit(self.cursor.next_batch, self.batch_size, self._buffers[self._slot])

    def _check_backend(self, p) -> None:
        explicit = p.HasField("backend")
        if (explicit and p.backend == LEVELDB) or (not explicit and _looks_like_leveldb(self.source)):
            raise self.config_error(
                f"LevelDB is not supported (source '{self.source}'); convert it to LMDB (e.g. Caffe's "
                f"convert_imageset/convert_mnist_data with --backend=lmdb, or `plite data mnist` for MNIST) "
                f"and set `backend: LMDB`"
            )
        # Caffe's default backend is LEVELDB; an unset backend reading an LMDB is accepted here.

    def _transform_param(self):
        """transform_param, completed with any legacy preprocessing fields of data_param."""
        p = self.layer_param.data_param
        tp = type(self.layer_param.transform_param)()
        tp.CopyFrom(self.layer_param.transform_param)
        for field in _LEGACY_TRANSFORM_FIELDS:
            if p.HasField(field) and not tp.HasField(field):
                setattr(tp, field, getattr(p, field))
        return tp

    def reshape(self, bottom, top) -> None:
        top[0].reshape(self.transformer.output_shape(self.batch_size))
        if self.output_labels:
            top[1].reshape(self.batch_size)

    def forward(self, bottom, top) -> None:
        try:
            if self._pending is not None:
                data, labels = self._pending.result()  # a DataError in the thread is raised here
                self._slot ^= 1
                self._prefetch()  # the batch after this one, into the other buffers
            else:
                data, labels = self.cursor.next_batch(self.batch_size)
        except DataError as e:
            raise DataError(f"{self.describe()}: {e}") from e
        self._next = (self._next + self.batch_size) % self.db.count
        self.transformer.transform(data, top[0].data)
        if self.output_labels:
            np.copyto(top[1].data, labels, casting="unsafe")

    # ---- resume ---------------------------------------------------------------------
    def get_position(self) -> int:
        """Index (in key order) of the record the next batch starts with."""
        return self._next

    def set_position(self, n: int) -> None:
        """Make the next batch start at record ``n mod count``."""
        self._wait()
        self.cursor.position = n
        self._next = self.cursor.position
        if self._executor is not None:
            self._prefetch()

    def _wait(self) -> None:
        """Let the read in flight finish (its batch is dropped, its errors too: it is re-read)."""
        if self._pending is not None:
            self._pending.exception()
            self._pending = None

    def close(self) -> None:
        """Stop the prefetch thread, if any."""
        if getattr(self, "_executor", None) is not None:
            self._wait()
            self._executor.shutdown(wait=True)
            self._executor = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown nothing useful can be done
            self.close()


def _looks_like_leveldb(path: str) -> bool:
    return (
        os.path.isdir(path)
        and os.path.exists(os.path.join(path, "CURRENT"))
        and not os.path.exists(os.path.join(path, "data.mdb"))
    )

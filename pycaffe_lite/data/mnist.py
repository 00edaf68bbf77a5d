"""MNIST: IDX files -> LMDB of caffe.Datum, as Caffe's convert_mnist_data writes it.

IDX files are big-endian: images start with magic 2051, count, rows, cols; labels
with magic 2049, count; then one uint8 per pixel / label.  Either may be gzipped.
Each record becomes key ``%08d`` (its index in the file) -> Datum(channels 1,
height rows, width cols, data = the raw pixels, label).

:func:`prepare_mnist` is what ``plite data mnist`` runs: it converts the 5,000
digits bundled with the package (or the full IDX files in a folder) into
``mnist_train_lmdb`` and ``mnist_test_lmdb``.  :func:`prepare_mnist_siamese`
(``plite data mnist --siamese``) makes the siamese example's pair databases.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import struct
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049

TRAIN_DB = "mnist_train_lmdb"
TEST_DB = "mnist_test_lmdb"
MNIST_URL = "http://yann.lecun.com/exdb/mnist/"


def bundled_mnist_dir():
    """The folder (an importlib Traversable) of the 4,000 + 1,000 digits shipped with the package."""
    return resources.files("pycaffe_lite") / "datasets" / "mnist5k"


def _read_bytes(path) -> bytes:
    """The contents of a file path or Traversable, gunzipped when it is gzip data."""
    name = getattr(path, "name", str(path))
    try:
        with (path.open("rb") if hasattr(path, "open") else open(path, "rb")) as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"IDX file '{path}' does not exist") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"IDX file '{name}' is a damaged gzip file ({e})") from e
    return raw


def _header(raw: bytes, path, magic: int, ndim: int) -> tuple[int, ...]:
    size = 4 * (1 + ndim)
    if len(raw) < size:
        raise DataError(f"IDX file '{path}' is too short ({len(raw)} bytes) to hold a header")
    fields = struct.unpack(f">{1 + ndim}I", raw[:size])
    if fields[0] != magic:
        what = "images" if magic == IMAGE_MAGIC else "labels"
        raise DataError(
            f"IDX file '{path}' has magic number {fields[0]}, expected {magic} for {what}; "
            f"is it the {'label' if magic == IMAGE_MAGIC else 'image'} file?"
        )
    dims = fields[1:]
    need = size + int(np.prod(dims, dtype=np.int64))
    if len(raw) < need:
        raise DataError(f"IDX file '{path}' is truncated: header promises {need} bytes, file has {len(raw)}")
    return dims


def read_idx_images(path) -> np.ndarray:
    """uint8 (N, rows, cols) images of an IDX3 file (gzipped or not)."""
    raw = _read_bytes(path)
    n, rows, cols = _header(raw, path, IMAGE_MAGIC, 3)
    return np.frombuffer(raw, np.uint8, count=n * rows * cols, offset=16).reshape(n, rows, cols)


def read_idx_labels(path) -> np.ndarray:
    """uint8 (N,) labels of an IDX1 file (gzipped or not)."""
    raw = _read_bytes(path)
    (n,) = _header(raw, path, LABEL_MAGIC, 1)
    return np.frombuffer(raw, np.uint8, count=n, offset=8)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_datum_lmdb(db_path: str, images: np.ndarray, labels: np.ndarray, *, overwrite: bool = False,
                     txn_size: int = 1000) -> str:
    """Write uint8 images (N, C, H, W) or (N, H, W) with labels as a Datum LMDB at ``db_path``.

    Keys are ``%08d`` in array order.  The database is built in ``<db_path>.tmp`` and
    renamed into place, so a crash never leaves a half-written ``db_path``.
    """
    import lmdb

    from ..proto import caffe_pb2

    db_path = os.fspath(db_path)
    if images.ndim == 3:
        images = images[:, None]
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels for '{db_path}'")
    if os.path.lexists(db_path) and not overwrite:
        raise DataError(f"'{db_path}' already exists; delete it or pass overwrite=True (--overwrite) to replace it")
    N, C, H, W = images.shape
    tmp = f"{db_path}.tmp"
    _remove(tmp)
    parent = os.path.dirname(os.path.abspath(db_path))
    os.makedirs(parent, exist_ok=True)
    # Room for every record with generous B-tree overhead; grown on MapFullError below.
    map_size = max(1 << 24, 2 * N * (C * H * W + 64))
    env = lmdb.open(tmp, map_size=map_size, subdir=True, meminit=False)
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = C, H, W
    try:
        for start in range(0, N, txn_size):
            stop = min(start + txn_size, N)
            items = []
            for i in range(start, stop):
                datum.data = images[i].tobytes()
                datum.label = int(labels[i])
                items.append((b"%08d" % i, datum.SerializeToString()))
            while True:
                try:
                    with env.begin(write=True) as txn:
                        txn.cursor().putmulti(items, append=True)
                    break
                except lmdb.MapFullError:
                    map_size *= 2
                    env.set_mapsize(map_size)
        env.sync()
    finally:
        env.close()
    if os.path.lexists(db_path):
        old = f"{db_path}.old"
        _remove(old)
        os.rename(db_path, old)
        os.rename(tmp, db_path)
        _remove(old)
    else:
        os.rename(tmp, db_path)
    return db_path


def convert_mnist(image_file, label_file, db_path: str, *, limit: int | None = None,
                  overwrite: bool = False) -> int:
    """Convert an MNIST image/label IDX pair into a Datum LMDB; return the number of records.

    Raises
    ------
    DataError
        Bad magic number, truncated file, different image and label counts, or an
        existing ``db_path`` without ``overwrite``.
    """
    db_path = os.fspath(db_path)
    if os.path.lexists(db_path) and not overwrite:
        raise DataError(f"'{db_path}' already exists; delete it or pass overwrite=True (--overwrite) to replace it")
    images = read_idx_images(image_file)
    labels = read_idx_labels(label_file)
    if len(images) != len(labels):
        raise DataError(
            f"'{image_file}' holds {len(images)} images but '{label_file}' holds {len(labels)} labels; "
            f"they must come from the same set"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    log.info("A total of %d items. Rows: %d Cols: %d", len(images), images.shape[1], images.shape[2])
    write_datum_lmdb(db_path, images, labels, overwrite=overwrite)
    log.info("Wrote %d records to %s", len(images), db_path)
    return len(images)


def _find_idx(idx_dir: Path, prefix: str, kind: str):
    """``<prefix>-<kind>-ubyte[.gz]`` (or the common ``<prefix>-<images>.idx3-ubyte`` spelling)."""
    stem, idx = kind.split("-")
    names = [f"{prefix}-{stem}-{idx}-ubyte", f"{prefix}-{stem}.{idx}-ubyte"]
    for name in names:
        for suffix in ("", ".gz"):
            p = idx_dir / (name + suffix)
            if p.is_file():
                return p
    raise DataError(
        f"no {names[0]}[.gz] in '{idx_dir}'; download the four MNIST IDX files from {MNIST_URL} into it"
    )


def _mnist_sets(out_dir: Path, idx_dir, dbs: tuple[str, str], overwrite: bool) -> list[tuple[Path, Path, str]]:
    """``[(images file, labels file, db name)]`` for the train and test sets, after checking the
    source folder exists and (unless ``overwrite``) that no output database does."""
    src = bundled_mnist_dir() if idx_dir is None else Path(idx_dir)
    if idx_dir is not None and not src.is_dir():
        raise DataError(f"MNIST folder '{idx_dir}' does not exist; download the IDX files from {MNIST_URL}")
    if not overwrite:
        for db in dbs:
            if os.path.lexists(out_dir / db):
                raise DataError(
                    f"'{out_dir / db}' already exists; delete it or pass overwrite=True (--overwrite) to replace it"
                )
    sets = []
    for prefix, db in zip(("train", "t10k"), dbs):
        if idx_dir is None:
            sets.append((src / f"{prefix}-images-idx3-ubyte.gz", src / f"{prefix}-labels-idx1-ubyte.gz", db))
        else:
            sets.append((_find_idx(src, prefix, "images-idx3"), _find_idx(src, prefix, "labels-idx1"), db))
    return sets


def prepare_mnist(out_dir, idx_dir=None, limit: int | None = None, *,
                  overwrite: bool = False) -> tuple[str, str]:
    """Create ``<out_dir>/mnist_train_lmdb`` and ``<out_dir>/mnist_test_lmdb``.

    Parameters
    ----------
    out_dir : path
        Folder for the two databases (created if needed).
    idx_dir : path, optional
        Folder with the full MNIST IDX files (``train-images-idx3-ubyte[.gz]``,
        ``train-labels-idx1-ubyte[.gz]``, ``t10k-...``); by default the 4,000 train and
        1,000 test digits bundled with pycaffe_lite.
    limit : int, optional
        Keep only the first ``limit`` records of each set (for tests).
    overwrite : bool
        Replace existing databases instead of raising DataError.

    Returns
    -------
    (train_path, test_path)
    """
    out_dir = Path(out_dir)
    paths = []
    for images, labels, db in _mnist_sets(out_dir, idx_dir, (TRAIN_DB, TEST_DB), overwrite):
        db_path = str(out_dir / db)
        convert_mnist(images, labels, db_path, limit=limit, overwrite=overwrite)
        paths.append(db_path)
    return paths[0], paths[1]


# ---- siamese pairs ----------------------------------------------------------------------
SIAMESE_TRAIN_DB = "mnist_siamese_train_lmdb"
SIAMESE_TEST_DB = "mnist_siamese_test_lmdb"


def make_siamese_pairs(images: np.ndarray, labels: np.ndarray, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs of digits as Caffe's convert_mnist_siamese_data makes them.

    As many pairs as images; pair ``k`` takes two indices drawn uniformly (with
    replacement, so an image may pair with itself) and stacks the two images as
    channels 0 and 1.  Its label is 1 when the two digits are the same, else 0.

    Returns
    -------
    (pairs uint8 (N, 2, rows, cols), similar uint8 (N,))
    """
    n = len(images)
    if n == 0:
        raise DataError("no images to pair")
    index = np.random.default_rng(seed).integers(0, n, size=(n, 2))
    pairs = images[index]  # (N, 2, rows, cols)
    similar = (labels[index[:, 0]] == labels[index[:, 1]]).astype(np.uint8)
    return pairs, similar


def prepare_mnist_siamese(out_dir, idx_dir=None, limit: int | None = None, *, seed: int | None = 0,
                          overwrite: bool = False) -> tuple[str, str]:
    """Create ``<out_dir>/mnist_siamese_train_lmdb`` and ``<out_dir>/mnist_siamese_test_lmdb``.

    What Caffe's ``examples/siamese/create_mnist_siamese.sh`` makes, as LMDB instead of
    LevelDB: for each set (the first ``limit`` digits of it), as many Datums as digits,
    keys ``%08d``, each 2 x rows x cols (a random pair, see :func:`make_siamese_pairs`)
    with label 1 for the same digit and 0 otherwise.  Caffe draws the pairs from an
    unseeded generator; ``seed`` makes them repeatable here (None: a fresh draw).
    Parameters otherwise as :func:`prepare_mnist`.

    Returns
    -------
    (train_path, test_path)
    """
    out_dir = Path(out_dir)
    paths = []
    dbs = (SIAMESE_TRAIN_DB, SIAMESE_TEST_DB)
    for k, (image_file, label_file, db) in enumerate(_mnist_sets(out_dir, idx_dir, dbs, overwrite)):
        images, labels = read_idx_images(image_file), read_idx_labels(label_file)
        if len(images) != len(labels):
            raise DataError(
                f"'{image_file}' holds {len(images)} images but '{label_file}' holds {len(labels)} labels; "
                f"they must come from the same set"
            )
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        # the test set gets its own stream, so that its pairs do not depend on the training set's size
        pairs, similar = make_siamese_pairs(images, labels, None if seed is None else seed + k)
        log.info("A total of %d pairs (%d of the same digit). Rows: %d Cols: %d", len(pairs), int(similar.sum()),
                 images.shape[1], images.shape[2])
        db_path = str(out_dir / db)
        write_datum_lmdb(db_path, pairs, similar, overwrite=overwrite)
        paths.append(db_path)
    return paths[0], paths[1]

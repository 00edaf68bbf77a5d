"""The adding problem: a synthetic long-term-dependency task for recurrent nets.

Each sequence has T steps of two inputs: a number drawn uniformly from [0, 1] and a marker
that is 1 at exactly two steps, one in the first half (steps 0 .. T//2 - 1) and one in the
second (T//2 .. T - 1), and 0 elsewhere; the target is the sum of the two marked numbers
(Hochreiter & Schmidhuber, "Long short-term memory", 1997, experiment 4, in the form of
Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of rectified linear
units", 2015).  Predicting 1 (the target's mean) whatever the input scores a mean squared
error of 1/6 ~ 0.167 (the variance of a sum of two uniform numbers); a net beats that only by
carrying the first marked number across at least T/2 steps.

:func:`prepare_adding` writes what ``models/adding_problem`` reads: for each of train and test,
an LMDB of inputs (one float Datum per sequence, shape (C, H, W) = (T, 1, 2)) and an LMDB of
targets (one float Datum (1, 1, 1) per sequence), with the same keys, so two Data layers of the
same batch size read matching batches.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import DataError

#: LMDB folder names under ``out_dir`` (inputs and targets, train and test)
DBS = ("train_x_lmdb", "train_y_lmdb", "test_x_lmdb", "test_y_lmdb")


def make_adding(T: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of the adding problem of length ``T``.

    Returns
    -------
    x : (n, T, 2) float32
        ``x[:, :, 0]`` the numbers (uniform in [0, 1]), ``x[:, :, 1]`` the markers.
    y : (n,) float32
        The sum of the two marked numbers of each sequence.
    """
    if T < 2:
        raise DataError(f"the adding problem needs T >= 2 steps (one marker in each half), got T = {T}")
    if n < 0:
        raise DataError(f"the number of sequences must be >= 0, got {n}")
    half = T // 2
    x = np.zeros((n, T, 2), np.float32)
    x[:, :, 0] = rng.uniform(0.0, 1.0, (n, T))
    rows = np.arange(n)
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = x[rows, first, 0] + x[rows, second, 0]
    return x, y.astype(np.float32)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def write_float_lmdb(db_path: str, values: np.ndarray) -> str:
    """Write ``values`` (n, C, H, W) as n float Datum records (label 0), keys ``%08d`` in order.

    Built in ``<db_path>.tmp`` and renamed into place, replacing an existing ``db_path``.
    """
    import lmdb

    from ..proto import caffe_pb2

    n, C, H, W = values.shape
    tmp = f"{db_path}.tmp"
    _remove(tmp)
    os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
    # packed float_data: 4 bytes a value plus the header; doubled for the B-tree
    map_size = max(1 << 24, 2 * n * (4 * C * H * W + 64))
    env = lmdb.open(tmp, map_size=map_size, subdir=True, meminit=False)
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = C, H, W
    try:
        with env.begin(write=True) as txn:
            cursor = txn.cursor()
            for i in range(n):
                del datum.float_data[:]
                datum.float_data.extend(values[i].ravel().tolist())
                cursor.put(b"%08d" % i, datum.SerializeToString(), append=True)
        env.sync()
    finally:
        env.close()
    _remove(db_path)
    os.rename(tmp, db_path)
    return db_path


def prepare_adding(out_dir, T: int, n_train: int, n_test: int, seed: int = 0) -> list[str]:
    """Generate the adding problem of length ``T`` and write the four LMDBs of :data:`DBS`
    under ``out_dir`` (replacing earlier ones); return their paths.

    The training and test sets come from one generator seeded with ``seed`` (training first),
    so the same arguments write the same data.
    """
    if n_train < 1 or n_test < 1:
        raise DataError(f"--n-train and --n-test must be at least 1, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    paths = []
    for stem, n in (("train", n_train), ("test", n_test)):
        x, y = make_adding(T, n, rng)
        paths.append(write_float_lmdb(str(out / f"{stem}_x_lmdb"), x[:, :, None, :]))
        paths.append(write_float_lmdb(str(out / f"{stem}_y_lmdb"), y.reshape(n, 1, 1, 1)))
    return paths

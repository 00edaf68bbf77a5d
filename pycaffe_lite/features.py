"""Extract blobs of a net over a dataset (``plite features``, Caffe's extract_features)."""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError, NetConfigError

__all__ = ["extract_features"]

log = logging.getLogger(__name__)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def extract_features(
    model: str | os.PathLike,
    weights: str | os.PathLike | Sequence[str] | None,
    blob_names: Sequence[str],
    iterations: int,
    out_dir: str | os.PathLike,
    fmt: str = "npy",
) -> dict[str, Path]:
    """Run the TEST net ``iterations`` times and save each named blob for every item.

    ``npy``: ``out_dir/<blob>.npy`` holding (iterations x batch, ...) float32.
    ``lmdb``: ``out_dir/<blob>`` an LMDB of float Datums keyed ``%010d`` (the item's
    index), with channels/height/width the blob's legacy C, H, W (trailing dims of 1),
    as Caffe's extract_features writes.

    Returns
    -------
    dict
        blob name -> the file or folder written.

    Raises
    ------
    NetConfigError
        A blob name the net does not have (the message lists those it has).
    """
    from .layer import TEST
    from .net import Net

    if fmt not in ("npy", "lmdb"):
        raise DataError(f"unknown feature format '{fmt}'; use npy or lmdb")
    if iterations <= 0:
        raise DataError(f"--iterations must be positive, got {iterations}")
    net = Net(model, phase=TEST, weights=weights)
    missing = [b for b in blob_names if b not in net.blobs]
    if missing:
        raise NetConfigError(
            f"{model}: no blob named {', '.join(repr(b) for b in missing)} in the TEST net; it has: "
            + ", ".join(net.blobs)
        )
    collected: dict[str, list[np.ndarray]] = {b: [] for b in blob_names}
    for i in range(iterations):
        net.forward()
        for b in blob_names:
            collected[b].append(np.array(net.blobs[b].data, dtype=np.float32, copy=True))
        log.info("Batch %d of %d", i + 1, iterations)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for b in blob_names:
        arr = np.concatenate([a if a.ndim else a[None] for a in collected[b]])
        if fmt == "npy":
            target = out_dir / f"{_safe(b)}.npy"
            np.save(target, arr)
        else:
            target = out_dir / _safe(b)
            _write_lmdb(target, arr)
        log.info("Extracted features of %d items for feature blob %s to %s", len(arr), b, target)
        written[b] = target
    return written


def _write_lmdb(path: Path, arr: np.ndarray) -> None:
    from .data.images import write_datum_records
    from .proto import caffe_pb2

    item_shape = arr.shape[1:]
    legacy = tuple(item_shape) + (1,) * (3 - len(item_shape)) if len(item_shape) <= 3 else (
        int(np.prod(item_shape)), 1, 1)

    def records():
        datum = caffe_pb2.Datum()
        for i, item in enumerate(arr):
            datum.Clear()
            datum.channels, datum.height, datum.width = legacy
            datum.float_data.extend(item.ravel().tolist())
            yield b"%010d" % i, datum.SerializeToString()

    write_datum_records(path, records())

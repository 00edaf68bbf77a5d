"""Dataset statistics for augmentation and pre-processing, saved as BlobProto binaryprotos.

Three tools over a Datum LMDB (``plite data pca | stats | whiten``), each with its loader,
which the :class:`~pycaffe_lite.data.transformer.DataTransformer` uses:

* :func:`compute_pca` -> shape ``(C + 1, C)`` (C = 3): row 0 holds the eigenvalues of the
  covariance of the pixel colours (all pixels of all records, as 3-vectors), largest first;
  rows 1..C hold the eigenvectors **as columns** (``P[:, k]`` belongs to ``eigval[k]``).
  Computed on ``x / max_pixel_value`` (colours in [0, 1]); AlexNet's "fancy PCA" lighting
  (Krizhevsky, Sutskever & Hinton 2012, section 4.1) adds ``P @ (alpha * eigval)`` to each
  pixel of an image.
* :func:`compute_stats` -> shape ``(2, C)``: per-channel mean (row 0) and standard
  deviation (row 1, population) over all pixels, in record units (0-255 for uint8), the
  values ``mean_value`` / ``std_value`` take.
* :func:`compute_whitening` -> shape ``(D + 1, D)``, ``D = C * H * W``: row 0 is the mean
  record ``mu``, rows 1..D the whitening matrix ``Wh``; the transformer computes
  ``Wh @ (x / max_pixel_value - mu)``.  With the covariance ``S = U diag(l) U^T``: ZCA
  ``Wh = U diag(1 / sqrt(l + eps)) U^T`` (whitened images still look like images), PCA
  ``Wh = diag(1 / sqrt(l + eps)) U^T`` (rotated onto the principal axes).

Sums are accumulated in float64 over chunks of records, so any database size works; the
whitening covariance is ``D x D`` and limited to ``D <= MAX_WHITEN_DIM``.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import DataError
from .lmdb_source import iter_records

log = logging.getLogger(__name__)

#: largest record size (C * H * W) whitening accepts: the covariance is D x D float64 (128 MB at 4096)
MAX_WHITEN_DIM = 4096
def _blob(arr: np.ndarray):
    from ..io.arrays import array_to_blobproto

    return array_to_blobproto(np.asarray(arr, np.float32))


def _load(path: str, what: str, tool: str) -> np.ndarray:
    """A float32 array from a BlobProto file; errors say which tool makes it."""
    from google.protobuf.message import DecodeError

    from ..io.arrays import blobproto_to_array
    from ..proto import caffe_pb2

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{what} '{path}' does not exist; create it with `{tool}`")
    proto = caffe_pb2.BlobProto()
    try:
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
        return blobproto_to_array(proto)
    except (DecodeError, DataError) as e:
        raise DataError(f"{what} '{path}' is not a valid BlobProto ({e}); recreate it with `{tool}`") from e


# ---------------------------------------------------------------------- fancy PCA
def compute_pca(db: str, max_pixel_value: float = 255.0):
    """Eigen-decomposition of the RGB covariance of every pixel of ``db`` (colours in [0, 1]).

    Returns a BlobProto of shape ``(4, 3)``: eigenvalues (descending), then the eigenvector
    matrix with eigenvectors as columns.

    Raises
    ------
    DataError
        The records are not 3-channel, or the database cannot be read.
    """
    total = np.zeros(3)
    outer = np.zeros((3, 3))
    n = 0
    for x in iter_records(db):
        if x.shape[1] != 3:
            raise DataError(f"LMDB '{db}' has {x.shape[1]}-channel records; the RGB PCA needs 3 channels")
        pix = x.transpose(1, 0, 2, 3).reshape(3, -1) / max_pixel_value
        total += pix.sum(axis=1)
        outer += pix @ pix.T
        n += pix.shape[1]
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    log.info("RGB covariance eigenvalues of %s: %s", db, " ".join(f"{v:.6g}" for v in eigval))
    return _blob(np.vstack([eigval[None, :], eigvec]))


def load_pca(path: str, channels: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(eigval (3,), eigvec (3, 3))`` float64 from a `plite data pca` file.

    Raises
    ------
    DataError
        Missing or unreadable file, or a blob that is not ``(4, 3)``.
    """
    arr = _load(path, "PCA file", "plite data pca DB OUT.binaryproto")
    if arr.shape != (channels + 1, channels):
        raise DataError(
            f"PCA file '{path}' holds a blob of shape {arr.shape}, expected ({channels + 1}, {channels}) "
            f"(eigenvalues, then eigenvectors as columns); recreate it with `plite data pca DB OUT.binaryproto`"
        )
    return arr[0].astype(np.float64), arr[1:].astype(np.float64)


# ---------------------------------------------------------------------- channel statistics
def compute_stats(db: str):
    """Per-channel mean and standard deviation over every pixel of ``db`` (record units).

    Returns a BlobProto of shape ``(2, C)``.
    """
    total = outer = None
    n = 0
    for x in iter_records(db):
        C = x.shape[1]
        if total is None:
            total, outer = np.zeros(C), np.zeros(C)
        pix = x.transpose(1, 0, 2, 3).reshape(C, -1)
        total += pix.sum(axis=1)
        outer += np.einsum("ij,ij->i", pix, pix)
        n += pix.shape[1]
    mean = total / n
    std = np.sqrt(np.maximum(outer / n - mean * mean, 0.0))
    log.info("transform_param lines for %s: %s %s", db, " ".join(f"mean_value: {v:.6g}" for v in mean),
             " ".join(f"std_value: {v:.6g}" for v in std))
    return _blob(np.vstack([mean, std]))


def load_stats(path: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (C,), std (C,))`` float32 from a `plite data stats` file, checked against ``channels``."""
    arr = _load(path, "stats file", "plite data stats DB OUT.binaryproto")
    if arr.ndim != 2 or arr.shape[0] != 2 or arr.shape[1] != channels:
        raise DataError(
            f"stats file '{path}' holds a blob of shape {arr.shape}, expected (2, {channels}) (mean and std "
            f"of each of the {channels} channels); recreate it with `plite data stats DB OUT.binaryproto`"
        )
    if (arr[1] <= 0).any():
        raise DataError(f"stats file '{path}': standard deviations {arr[1].tolist()} must all be positive "
                        f"(a constant channel cannot be normalised)")
    return arr[0].copy(), arr[1].copy()


# ---------------------------------------------------------------------- whitening
def compute_whitening(db: str, epsilon: float, mode: str = "zca", max_pixel_value: float = 255.0):
    """PCA or ZCA whitening of the records of ``db`` (values ``x / max_pixel_value``).

    Returns a BlobProto of shape ``(D + 1, D)``: the mean record, then the matrix.

    Raises
    ------
    DataError
        ``epsilon`` negative, ``mode`` unknown, or records larger than ``MAX_WHITEN_DIM``.
    """
    if not epsilon >= 0:
        raise DataError(f"whitening epsilon must be >= 0, got {epsilon}; 0.01-0.1 suits [0, 1] images")
    if mode not in ("zca", "pca"):
        raise DataError(f"whitening mode '{mode}' is unknown; use 'zca' or 'pca'")
    total = outer = None
    n = 0
    for x in iter_records(db):
        D = int(np.prod(x.shape[1:]))
        if D > MAX_WHITEN_DIM:
            raise DataError(
                f"LMDB '{db}' has records of {x.shape[1:]} = {D} values; whitening needs a {D}x{D} covariance "
                f"and is limited to {MAX_WHITEN_DIM} values: resize the images first (plite data imageset "
                f"--resize-height/--resize-width)"
            )
        flat = x.reshape(len(x), D) / max_pixel_value
        if total is None:
            total, outer = np.zeros(D), np.zeros((D, D))
        total += flat.sum(axis=0)
        outer += flat.T @ flat
        n += len(flat)
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    eigval, eigvec = np.linalg.eigh(cov)
    inv_sqrt = 1.0 / np.sqrt(np.clip(eigval, 0.0, None) + epsilon) if epsilon > 0 else None
    if inv_sqrt is None:
        if eigval.min() <= 1e-12:
            raise DataError(
                f"LMDB '{db}': the covariance of its {n} records is singular (smallest eigenvalue "
                f"{eigval.min():.3g}); give a positive --epsilon"
            )
        inv_sqrt = 1.0 / np.sqrt(eigval)
    matrix = inv_sqrt[:, None] * eigvec.T  # PCA: rows are the scaled principal axes
    if mode == "zca":
        matrix = eigvec @ matrix  # rotate back: U diag(1/sqrt(l + eps)) U^T
    log.info("%s whitening of %d records of %d values, epsilon %g", mode.upper(), n, len(mean), epsilon)
    return _blob(np.vstack([mean[None, :], matrix]))


def load_whitening(path: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mu (D,), matrix (D, D))`` float32 from a `plite data whiten` file, checked against ``dim``."""
    arr = _load(path, "whitening file", "plite data whiten DB OUT.binaryproto --epsilon E")
    if arr.shape != (dim + 1, dim):
        raise DataError(
            f"whitening file '{path}' holds a blob of shape {arr.shape}, expected ({dim + 1}, {dim}) for "
            f"records of {dim} values after cropping; compute it on records of the size the net sees "
            f"(`plite data whiten DB OUT.binaryproto --epsilon E`, without crop_size)"
        )
    return np.ascontiguousarray(arr[0]), np.ascontiguousarray(arr[1:])

"""Datasets: LMDB of caffe.Datum, the transformer, MNIST conversion, the image mean."""
from .datum import array_to_datum, datum_to_array
from .lmdb_source import DatumCursor, LMDBSource
from .mean import compute_mean, load_mean, save_mean
from .mnist import convert_mnist, prepare_mnist, read_idx_images, read_idx_labels
from .transformer import DataTransformer

__all__ = [
    "DataTransformer",
    "DatumCursor",
    "LMDBSource",
    "array_to_datum",
    "compute_mean",
    "convert_mnist",
    "datum_to_array",
    "load_mean",
    "prepare_mnist",
    "read_idx_images",
    "read_idx_labels",
    "save_mean",
]

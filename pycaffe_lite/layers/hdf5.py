"""HDF5Data and HDF5Output: datasets in HDF5 files (needs h5py, the ``hdf5`` extra)."""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from ..layer import Layer
from ..registry import register_layer
from ..rng import get_rng

HDF5_HINT = "pip install 'pycaffe-lite[hdf5]'"


def _h5py(layer: Layer):
    try:
        import h5py
    except ImportError:
        raise layer.config_error(f"reading and writing HDF5 files needs h5py, which is not installed: {HDF5_HINT}") \
            from None
    return h5py


@register_layer("HDF5Data", v1="HDF5_DATA")
class HDF5DataLayer(Layer):
    """Rows of HDF5 datasets named like the tops, from the files listed in ``source``.

    Bottom: none.  Top ``k``: (B, *D_k) float32, rows of the dataset named ``top[k]``
    (shape (N, *D_k)) in each file.  No blobs, no backward.

    ``hdf5_data_param.source`` is a text file with one .h5 path per line.  Rows are
    served in order, file after file, wrapping around; with ``shuffle`` the file order
    is shuffled at set-up and at each wrap, and the rows of each file when it is loaded
    (Caffe's scheme).  All datasets of one file must have the same number of rows.
    """

    exact_num_bottom = 0
    min_num_top = 1

    def setup(self, bottom, top) -> None:
        self.h5py = _h5py(self)
        p = self.layer_param.hdf5_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.config_error("hdf5_data_param.batch_size must be a positive integer")
        if not p.source:
            raise self.config_error("hdf5_data_param.source is empty; give a text file listing .h5 files")
        try:
            with open(p.source, encoding="utf-8") as f:
                self.files = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise DataError(f"{self.describe()}: cannot read the file list '{p.source}': {e.strerror}") from None
        if not self.files:
            raise DataError(f"{self.describe()}: '{p.source}' lists no HDF5 files")
        self.top_names = list(self.layer_param.top)
        self.shuffle = bool(p.shuffle)
        self.file_permutation = np.arange(len(self.files))
        if self.shuffle:
            self.file_permutation = get_rng().permutation(len(self.files))
        self.current_file = 0
        self._load(self.files[self.file_permutation[0]])
        self.current_row = 0

    def _load(self, path: str) -> None:
        try:
            with self.h5py.File(path, "r") as f:
                arrays = []
                for name in self.top_names:
                    if name not in f:
                        raise DataError(
                            f"{self.describe()}: '{path}' has no dataset '{name}' (the tops name the datasets; "
                            f"it holds: {', '.join(sorted(f.keys())) or 'none'})"
                        )
                    arrays.append(np.asarray(f[name][()], dtype=np.float32))
        except OSError as e:
            raise DataError(f"{self.describe()}: cannot open HDF5 file '{path}': {e}") from None
        previous = getattr(self, "row_shapes", None)
        for k, (name, a) in enumerate(zip(self.top_names, arrays)):
            if a.ndim < 1 or a.shape[0] == 0:
                raise DataError(f"{self.describe()}: dataset '{name}' in '{path}' has no rows (shape {a.shape})")
            if a.shape[0] != arrays[0].shape[0]:
                raise DataError(
                    f"{self.describe()}: datasets of '{path}' differ in rows: '{self.top_names[0]}' has "
                    f"{arrays[0].shape[0]}, '{name}' has {a.shape[0]}"
                )
            if previous is not None and a.shape[1:] != previous[k]:
                raise DataError(
                    f"{self.describe()}: dataset '{name}' in '{path}' has rows of shape {a.shape[1:]}, the "
                    f"first file's have {previous[k]}"
                )
        self.arrays = arrays
        self.row_shapes = [a.shape[1:] for a in arrays]
        self.rows = arrays[0].shape[0]
        self.data_permutation = np.arange(self.rows)
        if self.shuffle:
            self.data_permutation = get_rng().permutation(self.rows)

    def reshape(self, bottom, top) -> None:
        for t, shape in zip(top, self.row_shapes):
            t.reshape(self.batch_size, *shape)

    def _next(self) -> None:
        self.current_row += 1
        if self.current_row == self.rows:
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    if self.shuffle:
                        self.file_permutation = get_rng().permutation(len(self.files))
                self._load(self.files[self.file_permutation[self.current_file]])
            elif self.shuffle:
                self.data_permutation = get_rng().permutation(self.rows)
            self.current_row = 0

    def forward(self, bottom, top) -> None:
        for i in range(self.batch_size):
            row = self.data_permutation[self.current_row]
            for t, a in zip(top, self.arrays):
                t.data[i] = a[row]
            self._next()


@register_layer("HDF5Output", v1="HDF5_OUTPUT")
class HDF5OutputLayer(Layer):
    """Write its two bottoms to ``hdf5_output_param.file_name`` as datasets ``data`` and ``label``.

    Bottom: data (N, ...), label (N, ...).  No tops, no blobs, no backward.

    The file is created (emptied) at set-up; every forward pass appends its rows, so the
    file ends up holding every batch seen (Caffe's layer writes the datasets once per
    file).  Values are stored as float32.
    """

    exact_num_bottom = 2
    exact_num_top = 0

    def setup(self, bottom, top) -> None:
        self.h5py = _h5py(self)
        self.file_name = self.layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.config_error("hdf5_output_param.file_name is empty; give the .h5 file to write")
        folder = os.path.dirname(os.path.abspath(self.file_name))
        try:
            os.makedirs(folder, exist_ok=True)
            with self.h5py.File(self.file_name, "w"):
                pass
        except OSError as e:
            raise DataError(f"{self.describe()}: cannot create '{self.file_name}': {e}") from None

    def reshape(self, bottom, top) -> None:
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            raise self.shape_error(
                f"data and label must have the same number of rows, got {bottom[0].shape} and {bottom[1].shape}"
            )

    def forward(self, bottom, top) -> None:
        with self.h5py.File(self.file_name, "a") as f:
            for name, blob in (("data", bottom[0]), ("label", bottom[1])):
                values = np.asarray(blob.data, dtype=np.float32)
                if name not in f:
                    f.create_dataset(name, data=values, maxshape=(None, *values.shape[1:]), chunks=True)
                else:
                    ds = f[name]
                    if ds.shape[1:] != values.shape[1:]:
                        raise self.shape_error(
                            f"bottom '{name}' changed shape from {(None, *ds.shape[1:])} to {values.shape}"
                        )
                    n = ds.shape[0]
                    ds.resize(n + values.shape[0], axis=0)
                    ds[n:] = values

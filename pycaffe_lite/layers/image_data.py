"""ImageData: batches of image files named in a list file, read with Pillow."""
from __future__ import annotations

import os

import numpy as np

from ..data.images import read_image, read_image_list
from ..data.transformer import DataTransformer
from ..errors import DataError
from ..layer import Layer
from ..registry import register_layer
from ..rng import get_rng

#: decoded images are kept in memory while they take at most this many bytes in all
CACHE_LIMIT_BYTES = 256 << 20


@register_layer("ImageData", v1="IMAGE_DATA")
class ImageDataLayer(Layer):
    """Read ``batch_size`` images per forward pass from ``image_data_param.source``.

    Bottom: none.  Top: data (B, C, H, W) float32 transformed by ``transform_param``;
    label (B,).  No blobs, no backward.

    The source lists ``relative/path label`` per line; paths are joined to
    ``root_folder``.  Images are read as Caffe's OpenCV reads them (BGR, or grey when
    ``is_color`` is false) and resized to ``new_height x new_width`` when both are set
    (see :mod:`pycaffe_lite.data.images`).  Lines are read in order, wrapping at the end;
    ``shuffle`` shuffles them at set-up and at every wrap; ``rand_skip`` starts at a
    random line below it.  Each batch takes its shape from its first image; the images
    of a batch must share it (set ``new_height``/``new_width`` when sizes differ).
    """

    exact_num_bottom = 0
    exact_num_top = 2

    def setup(self, bottom, top) -> None:
        p = self.layer_param.image_data_param
        if not p.source:
            raise self.config_error("image_data_param.source is empty; give a list file of 'path label' lines")
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.config_error(
                f"new_height ({p.new_height}) and new_width ({p.new_width}) must be set together"
            )
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.config_error("image_data_param.batch_size must be a positive integer")
        self.new_height, self.new_width = int(p.new_height), int(p.new_width)
        self.is_color = bool(p.is_color)
        self.root_folder = p.root_folder
        self.shuffle = bool(p.shuffle)
        try:
            self.lines = read_image_list(p.source)
        except DataError as e:
            raise DataError(f"{self.describe()}: {e}") from e
        if self.shuffle:
            self._shuffle()
        self.lines_id = 0
        if p.rand_skip:
            skip = int(get_rng().integers(0, p.rand_skip))
            if skip >= len(self.lines):
                raise self.config_error(f"rand_skip draws {skip} but the list has only {len(self.lines)} images")
            self.lines_id = skip
        self._cache: dict[str, np.ndarray] = {}
        self._cache_bytes = 0
        first = self._read(self.lines[self.lines_id][0])
        self._transformers: dict[tuple[int, int, int], DataTransformer] = {}
        self.transformer = self._transformer(first.shape)

    def _shuffle(self) -> None:
        order = get_rng().permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]

    def _read(self, name: str) -> np.ndarray:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = os.path.join(self.root_folder, name)
        try:
            img = read_image(path, self.new_height, self.new_width, self.is_color)
        except DataError as e:
            raise DataError(f"{self.describe()}: {e}") from e
        if self._cache_bytes + img.nbytes <= CACHE_LIMIT_BYTES:
            self._cache[name] = img
            self._cache_bytes += img.nbytes
        return img

    def _transformer(self, shape) -> DataTransformer:
        shape = tuple(int(d) for d in shape)
        t = self._transformers.get(shape)
        if t is None:
            t = self._transformers[shape] = DataTransformer(
                self.layer_param.transform_param, self.phase, shape, self.describe()
            )
        return t

    def reshape(self, bottom, top) -> None:
        top[0].reshape(self.transformer.output_shape(self.batch_size))
        top[1].reshape(self.batch_size)

    def forward(self, bottom, top) -> None:
        images, labels, names = [], [], []
        for _ in range(self.batch_size):
            name, label = self.lines[self.lines_id]
            images.append(self._read(name))
            labels.append(label)
            names.append(name)
            self.lines_id += 1
            if self.lines_id >= len(self.lines):
                self.lines_id = 0
                if self.shuffle:
                    self._shuffle()
        shape = images[0].shape
        for name, img in zip(names, images):
            if img.shape != shape:
                raise DataError(
                    f"{self.describe()}: image '{name}' has shape {img.shape} but the batch's first image "
                    f"'{names[0]}' has {shape}; set image_data_param new_height and new_width to resize them"
                )
        self.transformer = self._transformer(shape)
        top[0].reshape(self.transformer.output_shape(self.batch_size))
        self.transformer.transform(np.stack(images), top[0].data)
        top[1].data[...] = labels

"""pycaffe's ``caffe.io`` image helpers: ``Transformer``, ``load_image``, ``resize_image``.

``Transformer.preprocess(name, image)`` turns one ``H' x W' x K`` image into the ``K x H x W``
float32 array a net input takes, in pycaffe's order::

    float32 -> resize to the input's H x W -> transpose -> channel swap -> * raw_scale
            -> - mean -> * input_scale

and ``deprocess`` undoes it in reverse (without the resize).  ``raw_scale`` applies before
the mean and ``input_scale`` after it, so a [0, 1] image, ``raw_scale`` 255 and a mean in
[0, 255] give what a CaffeNet expects.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import DataError, ShapeError

#: skimage's rgb2gray weights (R, G, B), which pycaffe's load_image(color=False) uses
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)


class Transformer:
    """Prepare images for the inputs of a net (and undo it for display).

    Parameters
    ----------
    inputs : mapping of input name -> blob shape ``(N, C, H, W)``, e.g.
        ``{"data": net.blobs["data"].data.shape}``.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]) -> None:
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> tuple[int, ...]:
        if in_ not in self.inputs:
            raise DataError(f"Transformer: '{in_}' is not one of its inputs ({', '.join(self.inputs)})")
        return self.inputs[in_]

    # ------------------------------------------------------------------ settings
    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Axis order taking the image to ``C x H x W`` (``(2, 0, 1)`` for ``H x W x C``)."""
        shape = self._check_input(in_)
        order = tuple(int(i) for i in order)
        if len(order) != len(shape) - 1 or sorted(order) != list(range(len(order))):
            raise ShapeError(f"Transformer '{in_}': transpose order {order} must be a permutation of "
                             f"{len(shape) - 1} axes (the input {shape} without its batch axis)")
        self.transpose[in_] = order

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order after the transpose, e.g. ``(2, 1, 0)`` for RGB -> BGR."""
        shape = self._check_input(in_)
        order = tuple(int(i) for i in order)
        if len(shape) < 2 or len(order) != shape[1] or sorted(order) != list(range(shape[1])):
            raise ShapeError(f"Transformer '{in_}': channel swap {order} must be a permutation of the "
                             f"{shape[1] if len(shape) > 1 else '?'} channels of input {shape}")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply the raw image by ``scale`` before subtracting the mean (255 for [0, 1] images
        into a net trained on [0, 255])."""
        self._check_input(in_)
        self.raw_scale[in_] = float(scale)

    def set_mean(self, in_: str, mean) -> None:
        """Subtract ``mean``: one value per channel (``(C,)``) or a whole ``(C, H, W)`` / ``(H, W)``
        image, in the input's (post-transpose, post-swap) layout."""
        shape = self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ShapeError(f"Transformer '{in_}': the mean has {mean.shape[0]} channels but the input "
                                 f"{shape} has {shape[1]}")
            mean = mean[:, None, None]
        else:
            full = (1, *mean.shape) if mean.ndim == 2 else mean.shape
            if full != shape[1:]:
                raise ShapeError(f"Transformer '{in_}': a mean of shape {mean.shape} does not fit the input "
                                 f"{shape}; give (C,) per channel or (C, H, W) = {shape[1:]}")
            mean = mean.reshape(full)
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply by ``scale`` after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = float(scale)

    # ------------------------------------------------------------------ transforms
    def preprocess(self, in_: str, data) -> np.ndarray:
        """One ``H' x W' x K`` image -> a ``K x H x W`` float32 array for input ``in_``."""
        shape = self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)  # a copy: the caller's image is never changed
        in_dims = shape[2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_])]
        if in_ in self.raw_scale:
            caffe_in = caffe_in * np.float32(self.raw_scale[in_])
        if in_ in self.mean:
            caffe_in = caffe_in - self.mean[in_]
        if in_ in self.input_scale:
            caffe_in = caffe_in * np.float32(self.input_scale[in_])
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_: str, data) -> np.ndarray:
        """Undo :meth:`preprocess` (except the resize) for one ``K x H x W`` item, or a batch of one."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32)
        if decaf_in.ndim == 4 and decaf_in.shape[0] == 1:
            decaf_in = decaf_in[0]
        if in_ in self.input_scale:
            decaf_in /= np.float32(self.input_scale[in_])
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= np.float32(self.raw_scale[in_])
        if in_ in self.channel_swap:
            decaf_in = decaf_in[list(np.argsort(self.channel_swap[in_]))]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in


def resize_image(im, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize an ``H x W x K`` image to ``new_dims`` (H, W): bilinear (``interp_order`` 1) or
    nearest (0), sampling at pixel centres with the borders clamped.

    pycaffe resizes with scikit-image, which may also smooth when shrinking; values can differ
    from it in the last digits, and more when downscaling by large factors.
    """
    im = np.asarray(im, dtype=np.float32)
    if im.ndim != 3:
        raise ShapeError(f"resize_image needs an H x W x K image, got shape {im.shape}")
    H, W = im.shape[:2]
    h, w = (int(d) for d in new_dims)
    if (h, w) == (H, W):
        return im.copy()
    if interp_order == 0:
        rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
        return im[rows][:, cols].copy()
    if interp_order != 1:
        raise DataError(f"resize_image: interp_order {interp_order} is not supported (0 nearest, 1 bilinear)")

    def axis(n_out: int, n_in: int):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    r0, r1, fr = axis(h, H)
    c0, c1, fc = axis(w, W)
    rows = im[r0] * (1 - fr)[:, None, None] + im[r1] * fr[:, None, None]
    out = rows[:, c0] * (1 - fc)[None, :, None] + rows[:, c1] * fc[None, :, None]
    return out.astype(np.float32)


def load_image(filename, color: bool = True) -> np.ndarray:
    """Read an image file as pycaffe does: ``H x W x 3`` RGB (``color``) or ``H x W x 1`` gray,
    float32 in [0, 1].  Gray files become 3 equal channels when ``color``; an alpha channel is
    dropped; colour files read as gray use skimage's weights 0.2125 R + 0.7154 G + 0.0721 B.

    Needs Pillow (``pip install pillow``).
    """
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"load_image('{filename}') needs Pillow, which is not installed: pip install pillow") from None
    try:
        with Image.open(filename) as img:
            img.load()
            mode = img.mode
            if mode.startswith("I;16"):
                arr = np.asarray(img, dtype=np.uint16).astype(np.float32) / np.float32(65535)
            elif mode in ("L", "1", "LA", "I", "F"):
                arr = np.asarray(img.convert("L"), dtype=np.float32) / np.float32(255)
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.float32) / np.float32(255)
    except OSError as e:
        raise DataError(f"load_image: cannot read '{filename}': {e}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if color and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif not color and arr.shape[2] == 3:
        arr = (arr @ np.asarray(GRAY_WEIGHTS, np.float32))[:, :, None]
    return np.ascontiguousarray(arr, dtype=np.float32)

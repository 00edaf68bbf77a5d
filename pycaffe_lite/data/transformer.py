"""TransformationParameter applied to a batch: mean, scale, crop, mirror.

Caffe's order for every value: ``(x - mean) * scale`` in float32 (``x * scale`` with no
mean), where the mean is per pixel (``mean_file``, a BlobProto of the uncropped image
shape) or per channel (``mean_value``: one value for every channel or one per channel).
``crop_size`` takes a ``crop x crop`` window: at random offsets in TRAIN
(``h_off`` uniform in ``[0, H - crop]``), centred in TEST (``h_off = (H - crop) // 2``);
a per-pixel mean is cropped at the same offsets.  ``mirror`` flips an item horizontally
with probability 1/2 in both phases.  Random draws come from
:func:`pycaffe_lite.rng.get_rng`: the mirror flags of the batch, then the row offsets,
then the column offsets.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import DataError, NetConfigError
from ..layer import TRAIN
from ..rng import get_rng


class DataTransformer:
    """Apply a TransformationParameter to batches of (C, H, W) records.

    Parameters
    ----------
    param : caffe.TransformationParameter
    phase : int
        TRAIN (0) or TEST (1): decides random vs centred crops.
    input_shape : tuple of int
        The (C, H, W) shape of one record.
    where : str
        Prefix for error messages (the layer's ``describe()``).
    """

    def __init__(self, param, phase: int, input_shape: tuple[int, int, int], where: str = "") -> None:
        self.where = f"{where}: " if where else ""
        self.phase = int(phase)
        self.input_shape = tuple(int(d) for d in input_shape)
        C, H, W = self.input_shape
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop_size = int(param.crop_size)
        if self.crop_size and (self.crop_size > H or self.crop_size > W):
            raise NetConfigError(
                f"{self.where}crop_size {self.crop_size} is larger than the {H}x{W} images; "
                f"use a crop_size of at most {min(H, W)}"
            )
        #: None, a per-pixel (C, H, W) mean, or a per-channel (C, 1, 1) mean, float32
        self.mean: np.ndarray | None = None
        self.mean_is_per_pixel = False
        if param.mean_file and len(param.mean_value):
            raise NetConfigError(f"{self.where}give either mean_file or mean_value, not both")
        if param.mean_file:
            from .mean import load_mean

            mean = load_mean(param.mean_file)
            if mean.shape != self.input_shape:
                raise DataError(
                    f"{self.where}the mean in '{param.mean_file}' has shape {mean.shape} but the records "
                    f"are {self.input_shape}; compute it from this data with tools/compute_image_mean.py"
                )
            self.mean = np.ascontiguousarray(mean, dtype=np.float32)
            self.mean_is_per_pixel = True
        elif len(param.mean_value):
            values = np.asarray(param.mean_value, dtype=np.float32)
            if values.size not in (1, C):
                raise NetConfigError(
                    f"{self.where}{values.size} mean_value entries for {C}-channel records; "
                    f"give one value or one per channel"
                )
            self.mean = np.broadcast_to(values, (C,)).reshape(C, 1, 1).copy()

    def output_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        C, H, W = self.input_shape
        if self.crop_size:
            H = W = self.crop_size
        return (int(batch_size), C, H, W)

    def transform(self, batch: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Transform ``batch`` (N, C, H, W) uint8 or float32 into ``out`` (float32, see output_shape)."""
        N = batch.shape[0]
        if batch.shape[1:] != self.input_shape:
            raise DataError(f"{self.where}records have shape {batch.shape[1:]}, expected {self.input_shape}")
        rng = get_rng()
        flip = rng.integers(0, 2, size=N).astype(bool) if self.mirror else None
        mean = self.mean
        c = self.crop_size
        if not c:
            np.copyto(out, batch, casting="unsafe")
        else:
            _, H, W = self.input_shape
            if self.phase == TRAIN:
                h_off = rng.integers(0, H - c + 1, size=N)
                w_off = rng.integers(0, W - c + 1, size=N)
                # One gather for the whole batch: the (N, C, c, c) windows at each item's offsets.
                windows = sliding_window_view(batch, (c, c), axis=(2, 3))
                np.copyto(out, windows[np.arange(N), :, h_off, w_off], casting="unsafe")
                if mean is not None and self.mean_is_per_pixel:
                    mean_windows = sliding_window_view(mean, (c, c), axis=(1, 2))
                    mean = mean_windows[:, h_off, w_off].transpose(1, 0, 2, 3)  # (N, C, c, c)
            else:
                h0, w0 = (H - c) // 2, (W - c) // 2
                np.copyto(out, batch[:, :, h0:h0 + c, w0:w0 + c], casting="unsafe")
                if mean is not None and self.mean_is_per_pixel:
                    mean = mean[:, h0:h0 + c, w0:w0 + c]
        if mean is not None:
            np.subtract(out, mean, out=out)
        if self.scale != 1:
            np.multiply(out, self.scale, out=out)
        if flip is not None and flip.any():
            idx = np.flatnonzero(flip)
            out[idx] = out[idx, :, :, ::-1]
        return out

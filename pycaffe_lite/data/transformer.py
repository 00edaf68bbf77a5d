"""TransformationParameter applied to a batch: Caffe's mean, scale, crop and mirror, plus
pycaffe_lite's augmentation and pre-processing (extension fields 1000-1019).

Caffe's part: every value becomes ``(x - mean) * scale`` in float32 (``x * scale`` with no
mean), where the mean is per pixel (``mean_file``, a BlobProto of the uncropped image
shape) or per channel (``mean_value``: one value for every channel or one per channel).
``crop_size`` takes a ``crop x crop`` window: at random offsets in TRAIN
(``h_off`` uniform in ``[0, H - crop]``), centred in TEST (``h_off = (H - crop) // 2``);
a per-pixel mean is cropped at the same offsets.  ``mirror`` flips an item horizontally
with probability 1/2 in both phases.

The whole pipeline, per record, in this order::

    1. geometry   (TRAIN) zoom by s ~ U[random_scale_min, random_scale_max] and rotate by
                  a ~ U[-max_rotation, max_rotation] degrees (counter-clockwise as displayed)
                  about the centre; bilinear; outside pixels read fill_value
    2. crop       random (TRAIN) / centred (TEST), Caffe's
    3. colour     (TRAIN, 3-channel records only) HSV jitter, then fancy-PCA lighting
    4. normalise  (x - mean) / std * scale        [mean_value/mean_file, std_value, or stats_file]
       mirror     Caffe's, both phases
    or 4'.        mirror, then whitening  Wh (x / max_pixel_value - mu)   [whiten_file]

**Value range.**  Steps 1-3 work on record values, 0-255 for uint8 images:
``max_pixel_value`` (default 255) is full intensity.  The colour operations divide by it,
work on colours in [0, 1], clip to [0, 1] and multiply back, so their output has the
record's range and the mean, std and scale fields keep their usual (0-255) units.  The PCA
and whitening files are computed on ``x / max_pixel_value`` too (`plite data pca`,
`plite data whiten`); records in [0, 1] need ``max_pixel_value: 1`` there and here.

**Grey records.**  HSV jitter and PCA lighting need 3-channel records; asking for them on
1-channel records is a configuration error (``force_color`` converts grey to colour).

**Random draws** come from :func:`pycaffe_lite.rng.get_rng` (the solver's ``random_seed``),
per batch in this order, each only when its operation is on: the mirror flags, the crop
row offsets, the crop column offsets (Caffe's three, unchanged), the scales and angles, the
HSV parameters (saturation, then value: power, factor, offset each; then hue), the PCA
alphas.  Powers and factors are log-uniform on their ranges (``p`` and ``1/p`` equally
likely), offsets, hue shifts, scales and angles uniform, PCA alphas ~ N(0, pca_sigma),
each drawn once per image per pass.  :attr:`DataTransformer.last_draws` keeps the last
batch's draws (for `plite data preview` and tests).
"""
from __future__ import annotations

import math

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
        TRAIN (0) or TEST (1): decides random vs centred crops, and whether the random
        augmentation (geometry, colour) runs at all.
    input_shape : tuple of int
        The (C, H, W) shape of one record.
    where : str
        Prefix for error messages (the layer's ``describe()``).
    """

    def __init__(self, param, phase: int, input_shape: tuple[int, int, int], where: str = "") -> None:
        self.where = f"{where}: " if where else ""
        self.phase = int(phase)
        self.input_shape = tuple(int(d) for d in input_shape)
        _, H, W = self.input_shape
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop_size = int(param.crop_size)
        if self.crop_size and (self.crop_size > H or self.crop_size > W):
            raise NetConfigError(
                f"{self.where}crop_size {self.crop_size} is larger than the {H}x{W} images; "
                f"use a crop_size of at most {min(H, W)}"
            )
        self.max_pixel_value = float(param.max_pixel_value)
        if not self.max_pixel_value > 0:
            raise NetConfigError(f"{self.where}max_pixel_value must be positive, got {param.max_pixel_value:g} "
                                 f"(255 for uint8 images, 1 for images in [0, 1])")
        #: the last batch's random draws, by name (arrays of one entry per item)
        self.last_draws: dict[str, np.ndarray] = {}
        self._warp_buf: np.ndarray | None = None
        self._white_buf: np.ndarray | None = None
        self._hsv_buf: np.ndarray | None = None
        self._init_mean(param)
        self._init_geometry(param)
        self._init_colour(param)
        self._init_whitening(param)

    # ---------------------------------------------------------------- configuration
    def _init_mean(self, param) -> None:
        C = self.input_shape[0]
        #: None, a per-pixel (C, H, W) mean, or a per-channel (C, 1, 1) mean, float32
        self.mean: np.ndarray | None = None
        self.mean_is_per_pixel = False
        #: None or the per-channel (C, 1, 1) factor scale / std, float32
        self.factor: np.ndarray | None = None
        if param.mean_file and len(param.mean_value):
            raise NetConfigError(f"{self.where}give either mean_file or mean_value, not both")
        if param.stats_file and (param.mean_file or len(param.mean_value) or len(param.std_value)):
            raise NetConfigError(f"{self.where}stats_file holds the mean and std: give it without mean_file, "
                                 f"mean_value or std_value")
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
            self.mean = self._per_channel(param.mean_value, "mean_value")
        std = None
        if param.stats_file:
            from .pca import load_stats

            try:
                mean, std = load_stats(param.stats_file, C)
            except DataError as e:
                raise DataError(f"{self.where}{e}") from e
            self.mean = mean.astype(np.float32).reshape(C, 1, 1)
        elif len(param.std_value):
            std = self._per_channel(param.std_value, "std_value")
            if (std <= 0).any():
                raise NetConfigError(f"{self.where}std_value must be positive, got {list(param.std_value)}")
        if std is not None:
            self.factor = (self.scale / np.asarray(std, np.float32)).reshape(C, 1, 1).astype(np.float32)

    def _per_channel(self, values, name: str) -> np.ndarray:
        C = self.input_shape[0]
        values = np.asarray(values, dtype=np.float32)
        if values.size not in (1, C):
            raise NetConfigError(
                f"{self.where}{values.size} {name} entries for {C}-channel records; "
                f"give one value or one per channel"
            )
        return np.broadcast_to(values, (C,)).reshape(C, 1, 1).copy()

    def _init_geometry(self, param) -> None:
        lo, hi = float(param.random_scale_min), float(param.random_scale_max)
        if not (lo > 0 and hi > 0):
            raise NetConfigError(f"{self.where}random_scale_min and random_scale_max must be positive, got "
                                 f"{lo:g} and {hi:g} (1 and 1 leave the size alone)")
        if lo > hi:
            raise NetConfigError(f"{self.where}random_scale_min {lo:g} is larger than random_scale_max {hi:g}; "
                                 f"swap them")
        if not param.max_rotation >= 0:
            raise NetConfigError(f"{self.where}max_rotation must be >= 0 degrees, got {param.max_rotation:g} "
                                 f"(angles are drawn in [-max_rotation, max_rotation])")
        self.scale_range = (lo, hi)
        self.max_rotation = float(param.max_rotation)
        self.fill_value = float(param.fill_value)
        self.warp = self.phase == TRAIN and (lo != 1 or hi != 1 or self.max_rotation > 0)

    def _init_colour(self, param) -> None:
        C = self.input_shape[0]
        self.jitter = (bool(param.jitter_saturation), bool(param.jitter_value), bool(param.jitter_hue))
        wanted = [name for name, on in zip(("jitter_saturation", "jitter_value", "jitter_hue"), self.jitter) if on]
        if param.pca_file:
            wanted.append("pca_file")
        if wanted and C != 3:
            raise NetConfigError(
                f"{self.where}{', '.join(wanted)} need 3-channel colour records but these have {C} channel(s); "
                f"remove {'them' if len(wanted) > 1 else 'it'} or set force_color: true"
            )
        for a, b in (("jitter_power_min", "jitter_power_max"), ("jitter_factor_min", "jitter_factor_max")):
            va, vb = getattr(param, a), getattr(param, b)
            if not (va > 0 and vb > 0):
                raise NetConfigError(f"{self.where}{a} and {b} must be positive, got {va:g} and {vb:g}")
            if va > vb:
                raise NetConfigError(f"{self.where}{a} {va:g} is larger than {b} {vb:g}; swap them")
        for name in ("jitter_offset", "jitter_hue_shift", "pca_sigma"):
            if not getattr(param, name) >= 0:
                raise NetConfigError(f"{self.where}{name} must be >= 0, got {getattr(param, name):g}")
        self.power_range = (float(param.jitter_power_min), float(param.jitter_power_max))
        self.factor_range = (float(param.jitter_factor_min), float(param.jitter_factor_max))
        self.jitter_offset = float(param.jitter_offset)
        self.jitter_hue_shift = float(param.jitter_hue_shift)
        # channel indices of red and blue (green is 1 in both orders)
        self.red, self.blue = (0, 2) if param.rgb_order else (2, 0)
        self.pca_sigma = float(param.pca_sigma)
        self.pca: tuple[np.ndarray, np.ndarray] | None = None
        if param.pca_file:
            from .pca import load_pca

            try:
                self.pca = load_pca(param.pca_file)
            except DataError as e:
                raise DataError(f"{self.where}{e}") from e
        train = self.phase == TRAIN
        self.hsv = train and any(self.jitter)
        self.lighting = train and self.pca is not None

    def _init_whitening(self, param) -> None:
        self.whiten: tuple[np.ndarray, np.ndarray] | None = None
        if not param.whiten_file:
            return
        clash = [f for f in ("mean_file", "stats_file") if getattr(param, f)]
        clash += [f for f in ("mean_value", "std_value") if len(getattr(param, f))]
        if param.scale != 1:
            clash.append("scale")
        if clash:
            raise NetConfigError(
                f"{self.where}whiten_file subtracts its own mean and gives unit-free values: remove "
                f"{', '.join(clash)} (whitening replaces them)"
            )
        from .pca import load_whitening

        _, C, H, W = self.output_shape(1)
        try:
            mu, matrix = load_whitening(param.whiten_file, C * H * W)
        except DataError as e:
            raise DataError(f"{self.where}{e}") from e
        self.whiten = (mu, np.ascontiguousarray(matrix.T))  # x_row @ Wh^T = (Wh x)^T

    # ---------------------------------------------------------------- running
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
        draws = self._draw(N)
        self.last_draws = draws
        flip = draws.get("mirror")
        src = self._apply_geometry(batch, draws) if self.warp else batch
        mean = self.mean
        c = self.crop_size
        if not c:
            np.copyto(out, src, casting="unsafe")
        else:
            _, H, W = self.input_shape
            if self.phase == TRAIN:
                h_off, w_off = draws["h_off"], draws["w_off"]
                # One gather for the whole batch: the (N, C, c, c) windows at each item's offsets.
                windows = sliding_window_view(src, (c, c), axis=(2, 3))
                np.copyto(out, windows[np.arange(N), :, h_off, w_off], casting="unsafe")
                if mean is not None and self.mean_is_per_pixel:
                    mean_windows = sliding_window_view(mean, (c, c), axis=(1, 2))
                    mean = mean_windows[:, h_off, w_off].transpose(1, 0, 2, 3)  # (N, C, c, c)
            else:
                h0, w0 = (H - c) // 2, (W - c) // 2
                np.copyto(out, src[:, :, h0:h0 + c, w0:w0 + c], casting="unsafe")
                if mean is not None and self.mean_is_per_pixel:
                    mean = mean[:, h0:h0 + c, w0:w0 + c]
        if self.hsv:
            if self._hsv_buf is None or self._hsv_buf.shape != out.shape:
                self._hsv_buf = np.empty(out.shape, np.float32)
            hsv_jitter(out, draws["hsv"], self.max_pixel_value, self.red, self.blue, self._hsv_buf, out)
        if self.lighting:
            self._apply_lighting(out, draws["pca_alpha"])
        if self.whiten is not None:
            self._flip(out, flip)
            self._apply_whitening(out)
            return out
        if mean is not None:
            np.subtract(out, mean, out=out)
        if self.factor is not None:
            np.multiply(out, self.factor, out=out)
        elif self.scale != 1:
            np.multiply(out, self.scale, out=out)
        self._flip(out, flip)
        return out

    def _draw(self, N: int) -> dict[str, np.ndarray]:
        """Every random choice of one batch, in the documented order."""
        rng = get_rng()
        draws: dict[str, np.ndarray] = {}
        if self.mirror:
            draws["mirror"] = rng.integers(0, 2, size=N).astype(bool)
        if self.crop_size and self.phase == TRAIN:
            _, H, W = self.input_shape
            draws["h_off"] = rng.integers(0, H - self.crop_size + 1, size=N)
            draws["w_off"] = rng.integers(0, W - self.crop_size + 1, size=N)
        if self.warp:
            lo, hi = self.scale_range
            draws["scale"] = rng.uniform(lo, hi, size=N)
            draws["angle"] = rng.uniform(-self.max_rotation, self.max_rotation, size=N)
        if self.hsv:
            params = np.zeros((N, 7), np.float32)
            params[:, [0, 1, 3, 4]] = 1  # neutral: power 1, factor 1, offset 0, shift 0
            for on, col in zip(self.jitter[:2], (0, 3)):
                if on:
                    params[:, col] = _log_uniform(rng, *self.power_range, N)
                    params[:, col + 1] = _log_uniform(rng, *self.factor_range, N)
                    params[:, col + 2] = rng.uniform(-self.jitter_offset, self.jitter_offset, size=N)
            if self.jitter[2]:
                params[:, 6] = rng.uniform(-self.jitter_hue_shift, self.jitter_hue_shift, size=N)
            draws["hsv"] = params
        if self.lighting:
            draws["pca_alpha"] = rng.normal(0.0, self.pca_sigma, size=(N, 3))
        return draws

    def _apply_geometry(self, batch: np.ndarray, draws) -> np.ndarray:
        from ..kernels.augment import affine_warp

        N, (C, H, W) = batch.shape[0], self.input_shape
        if self._warp_buf is None or self._warp_buf.shape[0] != N:
            self._warp_buf = np.empty((N, C, H, W), np.float32)
        affine_warp(np.ascontiguousarray(batch), warp_matrices(draws["scale"], draws["angle"], H, W),
                    self.fill_value, self._warp_buf)
        return self._warp_buf

    def _apply_lighting(self, out: np.ndarray, alpha: np.ndarray) -> None:
        """AlexNet's lighting: every pixel of image n gets ``P @ (alpha_n * eigval)``, then clip."""
        eigval, eigvec = self.pca
        delta = ((alpha * eigval) @ eigvec.T * self.max_pixel_value).astype(np.float32)  # (N, 3)
        np.add(out, delta[:, :, None, None], out=out)
        np.clip(out, 0, self.max_pixel_value, out=out)

    def _apply_whitening(self, out: np.ndarray) -> None:
        mu, matrix_t = self.whiten
        N = out.shape[0]
        flat = out.reshape(N, -1)
        np.multiply(flat, np.float32(1.0 / self.max_pixel_value), out=flat)
        np.subtract(flat, mu, out=flat)
        if self._white_buf is None or self._white_buf.shape != flat.shape:
            self._white_buf = np.empty_like(flat)
        np.matmul(flat, matrix_t, out=self._white_buf)
        np.copyto(flat, self._white_buf)

    @staticmethod
    def _flip(out: np.ndarray, flip) -> None:
        if flip is not None and flip.any():
            idx = np.flatnonzero(flip)
            out[idx] = out[idx, :, :, ::-1]


def hsv_jitter(x: np.ndarray, params: np.ndarray, max_value: float, r: int, b: int, hsv: np.ndarray,
               out: np.ndarray) -> np.ndarray:
    """HSV jitter of (N, 3, H, W) float32 images in ``[0, max_value]`` (``out`` may be ``x``).

    ``params`` (N, 7) float32 per image: saturation power, factor, offset; value power, factor,
    offset; hue shift: ``s -> clip(s^p * f + o, 0, 1)``, likewise ``v``, ``h -> h + shift mod 1``.
    ``(1, 1, 0, 1, 1, 0, 0)`` is the identity up to rounding.  ``r``/``b`` are the red/blue
    channel indices; ``hsv`` is a scratch array of ``x``'s shape.
    """
    from ..kernels.augment import jitter_hsv_to_rgb, rgb_to_hsv

    rgb_to_hsv(x, max_value, r, b, hsv)
    powers = params[:, [0, 3]].reshape(-1, 2, 1, 1)
    if (powers != 1).any():
        sv = hsv[:, 1:]
        with np.errstate(divide="ignore"):  # log(0) = -inf, and exp(p * -inf) = 0 = 0^p for p > 0
            np.log(sv, out=sv)
        np.multiply(sv, powers, out=sv)
        np.exp(sv, out=sv)
    jitter_hsv_to_rgb(hsv, params, max_value, r, b, out)
    return out


def _log_uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))


def warp_matrices(scales: np.ndarray, angles_deg: np.ndarray, H: int, W: int) -> np.ndarray:
    """(N, 6) inverse maps for :func:`pycaffe_lite.kernels.augment.affine_warp`: zoom by ``s`` and
    rotate by ``a`` degrees counter-clockwise (as displayed, rows going down) about the centre.

    An output pixel at ``d' = (x' - cx, y' - cy)`` reads the source at ``c + R(a) d' / s`` with
    ``R(a) = [[cos a, -sin a], [sin a, cos a]]``: for ``a = 90`` this is ``np.rot90``.
    """
    a = np.deg2rad(np.asarray(angles_deg, np.float64))
    s = np.asarray(scales, np.float64)
    cos, sin = np.cos(a) / s, np.sin(a) / s
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    mats = np.empty((len(s), 6), np.float64)
    mats[:, 0], mats[:, 1] = cos, -sin
    mats[:, 2] = cx - cos * cx + sin * cy
    mats[:, 3], mats[:, 4] = sin, cos
    mats[:, 5] = cy - sin * cx - cos * cy
    return mats

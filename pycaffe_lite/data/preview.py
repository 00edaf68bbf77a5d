"""`plite data preview`: a PNG grid of records as the net's data transformer hands them over.

The transform_param comes from a net (its Data layer of the chosen phase) or from a file
holding only a TransformationParameter in text format.  The records are transformed with
the same seed twice: once as the net sees them and once with the normalisation (mean, std,
stats, whitening, scale) left out.  The random draws do not depend on the normalisation, so
the second pass is exactly the first with mean and scale undone; it is what the grid shows,
as ``x / max_pixel_value`` in [0, 1].  Channels are shown in RGB (BGR records are swapped
back), 1-channel records in grey; other channel counts show their first channel.

Grid geometry: ``cols = ceil(sqrt(n))``, ``rows = ceil(n / cols)``; each tile is the
transformed ``h x w`` magnified ``zoom`` times (default: the smallest integer making tiles
at least 64 pixels), with ``PAD`` pixels of dark grey between and around the tiles.  The PNG
is ``cols * w * zoom + (cols + 1) * PAD`` wide and likewise high.
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import DataError, NetConfigError
from ..layer import TRAIN

log = logging.getLogger(__name__)

PAD = 2
#: the fields the display pass drops (normalisation only: they draw no random numbers)
_NORMALISATION_FIELDS = ("mean_file", "mean_value", "std_value", "stats_file", "whiten_file", "scale")
#: preprocessing that old nets put in data_param (Caffe moves it to transform_param)
_LEGACY_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def load_transform_param(path: str, phase: int = TRAIN):
    """``(TransformationParameter, source or None)`` from a net prototxt or a bare transform_param file.

    Raises
    ------
    NetConfigError
        A net without a Data layer in ``phase``.
    """
    from google.protobuf import text_format

    from ..proto import caffe_pb2

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"'{path}' does not exist; give a net prototxt or a transform_param prototxt")
    with open(path) as f:
        text = f.read()
    tp = caffe_pb2.TransformationParameter()
    try:
        text_format.Parse(text, tp)
        return tp, None
    except text_format.ParseError:
        pass  # not a bare TransformationParameter: read it as a net
    from ..io.prototxt import read_net
    from ..net import layer_included

    net = read_net(path).param
    state = caffe_pb2.NetState(phase=phase)
    for lp in net.layer:
        if lp.type in ("Data", "ImageData") and layer_included(state, lp):
            tp.CopyFrom(lp.transform_param)
            dp = lp.data_param
            for name in _LEGACY_FIELDS:
                if dp.HasField(name) and not tp.HasField(name):
                    setattr(tp, name, getattr(dp, name))
            return tp, (dp.source or None)
    raise NetConfigError(f"{path}: no Data layer in phase {'TRAIN' if phase == TRAIN else 'TEST'}; "
                         f"give a net with one, or a file holding a transform_param")


def augmented_samples(tp, source: str, n: int = 64, seed: int = 0, phase: int = TRAIN) -> np.ndarray:
    """``n`` records of ``source`` through ``tp`` minus its normalisation: float32 (n, C, h, w) in [0, 1]."""
    from ..proto import caffe_pb2
    from ..rng import get_state, set_random_seed, set_state
    from .lmdb_source import LMDBSource
    from .transformer import DataTransformer

    display = caffe_pb2.TransformationParameter()
    display.CopyFrom(tp)
    for name in _NORMALISATION_FIELDS:
        display.ClearField(name)
    saved = get_state()
    try:
        with LMDBSource(source, transform_param=tp) as src:
            data, _ = src.cursor().next_batch(n)
            # The net's own transformer first: it validates every field (a bad file or range fails here).
            net_view = DataTransformer(tp, phase, src.record_shape, "transform_param")
            set_random_seed(seed)
            net_view.transform(data, np.empty(net_view.output_shape(n), np.float32))
            shown = DataTransformer(display, phase, src.record_shape, "transform_param")
            set_random_seed(seed)
            out = np.empty(shown.output_shape(n), np.float32)
            shown.transform(data, out)
    finally:
        set_state(saved)
    out /= np.float32(tp.max_pixel_value)
    return np.clip(out, 0, 1, out=out)


def tile_grid(images: np.ndarray, zoom: int = 0, rgb_order: bool = False) -> np.ndarray:
    """(n, C, h, w) in [0, 1] -> uint8 (H, W) or (H, W, 3) grid (see the module docstring)."""
    n, C, h, w = images.shape
    zoom = zoom or max(1, math.ceil(64 / max(h, w)))
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = h * zoom, w * zoom
    if C == 3:
        pixels = images if rgb_order else images[:, ::-1]
        pixels = pixels.transpose(0, 2, 3, 1)  # (n, h, w, 3)
    else:
        pixels = images[:, 0]
    pixels = np.round(pixels * 255).astype(np.uint8)
    pixels = pixels.repeat(zoom, axis=1).repeat(zoom, axis=2)
    grid = np.full((rows * th + (rows + 1) * PAD, cols * tw + (cols + 1) * PAD, *pixels.shape[3:]), 48, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = PAD + r * (th + PAD), PAD + c * (tw + PAD)
        grid[y:y + th, x:x + tw] = pixels[k]
    return grid


def write_preview(model: str, out: str, source: str | None = None, n: int = 64, seed: int = 0,
                  phase: int = TRAIN, zoom: int = 0) -> tuple[int, int]:
    """Write the grid PNG of ``n`` augmented records; returns its (width, height).

    ``model`` is a net prototxt (its Data layer of ``phase``; ``source`` defaults to its
    ``data_param.source``) or a transform_param prototxt (then ``source`` is required).
    """
    from PIL import Image

    if n <= 0:
        raise DataError(f"--n must be a positive number of samples, got {n}")
    tp, net_source = load_transform_param(model, phase)
    source = source or net_source
    if not source:
        raise DataError(f"{model} names no data source; give --source DB")
    images = augmented_samples(tp, source, n=n, seed=seed, phase=phase)
    grid = tile_grid(images, zoom=zoom, rgb_order=tp.rgb_order)
    Image.fromarray(grid).save(out)
    log.info("Wrote %d %s samples of %s (seed %d) to %s", n, "TRAIN" if phase == TRAIN else "TEST", source, seed, out)
    return grid.shape[1], grid.shape[0]


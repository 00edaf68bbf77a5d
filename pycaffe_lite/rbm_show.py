"""Pictures of a trained RBM as PNG files (``plite rbm show``): the learned filters, data beside
their reconstructions, and samples from Gibbs chains.

    plite rbm show --model deploy.prototxt --weights X.caffemodel --out DIR [--data LMDB]

Every picture is a grid of tiles, one tile per visible vector drawn at the shape of the RBM's
bottom blob (28 x 28 for MNIST), ``PAD`` pixels of grey between tiles and around the grid:

* ``filters.png``: rows of W (one hidden unit's weights each), each tile stretched to its own
  minimum (black) .. maximum (white), as filters are usually shown.
* ``reconstructions.png`` (needs data): pairs of rows, digits on top, below them their
  mean-field reconstructions ``E[x | h = P(h|x)]`` (:func:`rbm_eval.reconstruction`).
* ``samples.png``: one Gibbs chain per row (:func:`rbm_eval.gibbs_sample`), started from data
  digits (or from random binary vectors without data), then ``steps`` sweeps between
  columns; the tiles show the visible probabilities (Bernoulli) or means (Gaussian).

Bernoulli probabilities are drawn on the fixed scale 0 (black) .. 1 (white); Gaussian means
and filters are stretched per tile.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from . import rbm_eval
from .errors import DataError, NetConfigError

log = logging.getLogger("pycaffe_lite")

#: pixels of grey between the tiles and around the grid
PAD = 2
_GREY = 128


@dataclass
class ShowOptions:
    """What to draw: how many filters, data digits, chains, columns and steps between columns."""

    n_filters: int = 100
    n_data: int = 40           # digits in reconstructions.png (whole rows; each row with its reconstructions)
    n_chains: int = 10
    n_columns: int = 10        # columns of samples.png: the start, then a picture every `steps` sweeps
    steps: int = 50
    columns: int = 10          # tiles per row of filters.png and reconstructions.png
    scale: float = 0.00390625  # data LMDB values -> [0, 1], as the training net's transform_param
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_filters", "n_data", "n_chains", "n_columns", "steps", "columns"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ShowOptions.{name} must be at least 1, got {getattr(self, name)}")


def tile_grid(tiles: np.ndarray, columns: int, stretch: bool) -> np.ndarray:
    """Lay out ``tiles`` (n, h, w) in rows of ``columns`` as one uint8 image.

    ``stretch``: map each tile's own min..max to 0..255 (a constant tile becomes mid-grey);
    otherwise clip the values to [0, 1] and map that to 0..255.  The image is
    ``rows * (h + PAD) + PAD`` by ``columns * (w + PAD) + PAD`` pixels, grey between tiles
    (and where the last row is short).
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    if tiles.ndim != 3 or tiles.shape[0] == 0:
        raise ValueError(f"tile_grid needs a non-empty (n, h, w) array of tiles, got shape {tiles.shape}")
    n, h, w = tiles.shape
    columns = max(1, min(int(columns), n))
    rows = math.ceil(n / columns)
    if stretch:
        lo = tiles.min(axis=(1, 2), keepdims=True)
        span = tiles.max(axis=(1, 2), keepdims=True) - lo
        safe = np.where(span > 0, span, 1.0)
        unit = np.where(span > 0, (tiles - lo) / safe, 0.5)
    else:
        unit = np.clip(tiles, 0.0, 1.0)
    pixels = np.rint(unit * 255.0).astype(np.uint8)
    out = np.full((rows * (h + PAD) + PAD, columns * (w + PAD) + PAD), _GREY, np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        y, x = PAD + r * (h + PAD), PAD + c * (w + PAD)
        out[y:y + h, x:x + w] = pixels[k]
    return out


def write_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a 2-D uint8 array as a greyscale PNG (Pillow)."""
    from PIL import Image

    Image.fromarray(image, mode="L").save(os.fspath(path))


def find_rbm_layer(net, name: str | None = None):
    """The RBM layer called ``name``, or the net's only RBM layer (an error names the choices)."""
    rbms = [layer for layer in net.layers if layer.type == "RBM"]
    if name is not None:
        for layer in rbms:
            if layer.name == name:
                return layer
        known = ", ".join(f"'{layer.name}'" for layer in rbms) or "none"
        raise NetConfigError(f"net '{net.name}' has no RBM layer '{name}' (its RBM layers: {known})")
    if len(rbms) != 1:
        known = ", ".join(f"'{layer.name}'" for layer in rbms)
        raise NetConfigError(
            f"net '{net.name}' has {len(rbms)} RBM layers{' (' + known + ')' if known else ''}; "
            + ("give one with --layer NAME" if rbms else "rbm show needs a net with an RBM layer (type: \"RBM\")")
        )
    return rbms[0]


def tile_shape(net, layer) -> tuple[int, int]:
    """(h, w) of one visible vector as a picture: the bottom blob's last two axes when the
    other axes hold one value (N x 1 x 28 x 28), else a square if V is one, else (1, V)."""
    i = net.layer_names.index(layer.name)
    shape = net.bottom_vecs[i][0].shape[1:]
    V = int(np.prod(shape)) if shape else 1
    if len(shape) >= 2 and int(np.prod(shape[:-2])) == 1:
        return int(shape[-2]), int(shape[-1])
    side = math.isqrt(V)
    return (side, side) if side * side == V else (1, V)


def read_lmdb_images(path: str, n: int, scale: float, V: int) -> np.ndarray:
    """The first ``n`` records of an LMDB of Datums, flattened to (n, V) and times ``scale``."""
    from .data.lmdb_source import LMDBSource

    with LMDBSource(path) as src:
        n = min(n, src.count)
        x = np.asarray(src.cursor().next_batch(n)[0], dtype=np.float64).reshape(n, -1) * scale
    if x.shape[1] != V:
        raise DataError(f"{path}: records hold {x.shape[1]} values ({src.record_shape}) but the RBM has {V} "
                        "visible units")
    return x


def show(model: str, weights: str, out_dir: str, data: str | None = None, layer_name: str | None = None,
         options: ShowOptions | None = None) -> list[str]:
    """Write filters.png, samples.png and (with ``data``, an LMDB) reconstructions.png into
    ``out_dir``; return the paths written."""
    from .layer import TEST
    from .net import Net

    opt = options or ShowOptions()
    net = Net(model, phase=TEST, weights=weights.split(",") if weights else None)
    layer = find_rbm_layer(net, layer_name)
    W, b, c, kind = rbm_eval.params_from_layer(layer)
    h, w = tile_shape(net, layer)
    gaussian = kind == "gaussian"
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(name: str, tiles: np.ndarray, columns: int, stretch: bool) -> None:
        path = os.path.join(out_dir, name)
        write_png(tile_grid(tiles.reshape(-1, h, w), columns, stretch), path)
        log.info("Wrote %s (%d tiles of %dx%d)", path, len(tiles), h, w)
        written.append(path)

    save("filters.png", W[: opt.n_filters], opt.columns, stretch=True)
    rng = np.random.default_rng(opt.seed)
    x = None
    if data:
        x = read_lmdb_images(data, max(opt.n_data, opt.n_chains), opt.scale, b.size)
        if not gaussian and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{data}: values times --scale {opt.scale:g} run from {x.min():g} to {x.max():g}, "
                            "outside [0, 1] for Bernoulli visible units; give the --scale the net was trained with")
        cols = max(1, min(opt.columns, opt.n_data, len(x)))
        shown = x[: max(1, min(opt.n_data, len(x)) // cols) * cols]  # whole rows only
        recon = rbm_eval.reconstruction(shown, W, b, c, kind)
        # row pairs: `cols` digits, then their reconstructions
        tiles = np.stack([shown.reshape(-1, cols, b.size), recon.reshape(-1, cols, b.size)], axis=1)
        save("reconstructions.png", tiles.reshape(-1, b.size), cols, stretch=gaussian)
    else:
        log.info("no --data: skipping reconstructions.png; the Gibbs chains start from random vectors")
    if x is not None and len(x) >= 1:
        start = x[np.arange(opt.n_chains) % len(x)]
    elif gaussian:
        start = b + rng.standard_normal((opt.n_chains, b.size))
    else:
        start = (rng.random((opt.n_chains, b.size)) < 0.5).astype(np.float64)
    columns = [start]
    state = start
    for _ in range(opt.n_columns - 1):
        state, mean = rbm_eval.gibbs_sample(W, b, c, state, opt.steps, rng=rng, visible_type=kind)
        columns.append(mean)
    grid = np.stack(columns, axis=1).reshape(-1, b.size)  # chain by chain: row k = chain k
    save("samples.png", grid, opt.n_columns, stretch=gaussian)
    return written

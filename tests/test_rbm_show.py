"""`plite rbm show` (pycaffe_lite/rbm_show.py): the tile grid, and the three PNG pictures of an RBM."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from pycaffe_lite import cli
from pycaffe_lite.data.lmdb_source import LMDBSource
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.rbm_show import PAD, ShowOptions, show, tile_grid

DEPLOY = """name: "tiny_rbm"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 6 dim: 5 } } }
layer { name: "rbm1" type: "RBM" bottom: "data" top: "h"
        rbm_param { num_hidden: 12 weight_filler { type: "gaussian" std: 0.3 } } }
"""


@pytest.fixture(autouse=True)
def _restore_logging():
    """cli.main configures the pycaffe_lite logger: put it back for other tests."""
    logger = logging.getLogger("pycaffe_lite")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture
def tiny(tmp_path):
    """A 30-visible (6 x 5) RBM with 12 hidden units and random weights, saved as a caffemodel."""
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    net = Net(str(model), phase=TEST)
    weights = tmp_path / "tiny.caffemodel"
    net.save(weights)
    return model, weights


def grid_size(rows: int, cols: int, h: int, w: int) -> tuple[int, int]:
    """(width, height) of a PNG of rows x cols tiles of h x w."""
    return cols * (w + PAD) + PAD, rows * (h + PAD) + PAD


def tiles_of(path, rows: int, cols: int, h: int, w: int) -> np.ndarray:
    img = np.asarray(Image.open(path))
    assert img.ndim == 2 and (img.shape[1], img.shape[0]) == grid_size(rows, cols, h, w)
    return np.stack([img[PAD + r * (h + PAD):PAD + r * (h + PAD) + h, PAD + c * (w + PAD):PAD + c * (w + PAD) + w]
                     for r in range(rows) for c in range(cols)])


def all_distinct(tiles: np.ndarray) -> bool:
    flat = tiles.reshape(len(tiles), -1)
    return len({row.tobytes() for row in flat}) == len(flat)


def test_tile_grid_layout_and_scaling():
    tiles = np.arange(5 * 2 * 3, dtype=np.float64).reshape(5, 2, 3)
    img = tile_grid(tiles, columns=2, stretch=True)
    assert img.shape == (3 * (2 + PAD) + PAD, 2 * (3 + PAD) + PAD) and img.dtype == np.uint8
    first = img[PAD:PAD + 2, PAD:PAD + 3]
    assert first.min() == 0 and first.max() == 255  # each tile stretched to its own range
    assert np.all(img[-PAD - 2:-PAD, -PAD - 3:-PAD] == 128)  # the missing sixth tile is grey
    fixed = tile_grid(np.array([[[-1.0, 0.5, 2.0]]]), columns=4, stretch=False)
    assert fixed.shape == (1 + 2 * PAD, 3 + 2 * PAD)
    np.testing.assert_array_equal(fixed[PAD, PAD:PAD + 3], [0, 128, 255])  # clipped to [0, 1]
    with pytest.raises(ValueError, match=r"non-empty \(n, h, w\) array of tiles, got shape \(0, 2, 2\)"):
        tile_grid(np.zeros((0, 2, 2)), 3, True)


def test_show_writes_the_three_pictures(tiny, tmp_path, mnist_small):
    # the 28x28 digits do not fit a 6x5 RBM: use a 784-visible one for the data pictures
    model = tmp_path / "rbm784.prototxt"
    # (64 hidden units: with few, two chains soon share a hidden state and so a picture)
    model.write_text(DEPLOY.replace("dim: 6 dim: 5", "dim: 28 dim: 28").replace("num_hidden: 12", "num_hidden: 64"))
    weights = tmp_path / "rbm784.caffemodel"
    Net(str(model), phase=TEST).save(weights)
    out = tmp_path / "pictures"
    opts = ShowOptions(n_filters=12, n_data=7, n_chains=3, n_columns=4, steps=2, columns=5)
    written = show(str(model), str(weights), str(out), data=str(mnist_small / "mnist_test_lmdb"), options=opts)
    assert [p.rsplit("/", 1)[-1] for p in written] == ["filters.png", "reconstructions.png", "samples.png"]

    filters = tiles_of(out / "filters.png", 3, 5, 28, 28)[:12]  # 12 filters in rows of 5
    assert all_distinct(filters)
    recon = tiles_of(out / "reconstructions.png", 2, 5, 28, 28)  # 7 digits -> one whole row of 5 + its row
    with LMDBSource(str(mnist_small / "mnist_test_lmdb")) as src:
        digits = np.asarray(src.cursor().next_batch(5)[0], dtype=np.float64).reshape(5, 28, 28) / 256
    np.testing.assert_allclose(recon[:5], np.rint(digits * 255), atol=1)  # top row: the digits themselves
    assert all_distinct(recon[:5]) and all_distinct(recon[5:])
    samples = tiles_of(out / "samples.png", 3, 4, 28, 28)  # one chain per row
    assert all_distinct(samples)
    np.testing.assert_array_equal(samples[0], recon[0])  # chain 0 starts at digit 0

    with pytest.raises(DataError, match=r"mnist_test_lmdb: values times --scale 1 run from 0 to 255, outside "
                                        r"\[0, 1\] for Bernoulli visible units; give the --scale the net was"):
        show(str(model), str(weights), str(out), data=str(mnist_small / "mnist_test_lmdb"),
             options=ShowOptions(scale=1.0))


def test_show_without_data_and_through_the_cli(tiny, tmp_path):
    model, weights = tiny
    out = tmp_path / "cli"
    rc = cli.main(["rbm", "show", "--model", str(model), "--weights", str(weights), "--out", str(out),
                   "--filters", "12", "--chains", "2", "--columns", "3", "--steps", "1"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["filters.png", "samples.png"]
    assert all_distinct(tiles_of(out / "filters.png", 2, 10, 6, 5)[:12])  # V = 30 drawn as the 6x5 input
    samples = tiles_of(out / "samples.png", 2, 3, 6, 5)
    assert set(np.unique(samples[[0, 3]])) <= {0, 255}  # random binary starts
    assert all_distinct(samples)


def test_errors(tiny, tmp_path, capsys):
    model, weights = tiny
    with pytest.raises(NetConfigError, match=r"net 'tiny_rbm' has no RBM layer 'rbm9' \(its RBM layers: 'rbm1'\)"):
        show(str(model), str(weights), str(tmp_path), layer_name="rbm9")
    no_rbm = tmp_path / "ip.prototxt"
    no_rbm.write_text('name: "plain" layer { name: "data" type: "Input" top: "data" '
                      'input_param { shape { dim: 1 dim: 4 } } }')
    with pytest.raises(NetConfigError, match=r"net 'plain' has 0 RBM layers; rbm show needs a net with an RBM layer"):
        show(str(no_rbm), "", str(tmp_path))
    with pytest.raises(ValueError, match=r"ShowOptions.steps must be at least 1, got 0"):
        ShowOptions(steps=0)
    rc = cli.main(["rbm", "show", "--model", str(model), "--weights", str(weights), "--out", str(tmp_path),
                   "--data", str(tmp_path / "missing_lmdb")])
    assert rc == 1 and "missing_lmdb" in capsys.readouterr().err

"""Dataset-statistics tools (`plite data pca | stats | whiten`) and `plite data preview`, on tiny LMDBs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pycaffe_lite.cli import main
from pycaffe_lite.data import pca
from pycaffe_lite.data.mean import save_mean
from pycaffe_lite.data.mnist import write_datum_lmdb
from pycaffe_lite.data.preview import augmented_samples, tile_grid, write_preview
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layer import TRAIN
from pycaffe_lite.proto import caffe_pb2


@pytest.fixture(scope="module")
def colour_db(tmp_path_factory):
    """40 colour records (3, 8, 8) whose channels are correlated, and the array itself."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, (40, 1, 8, 8))
    images = np.concatenate([base, 0.5 * base + 0.3 * rng.uniform(0, 1, (40, 1, 8, 8)),
                             rng.uniform(0, 1, (40, 1, 8, 8))], axis=1)
    images = np.round(images * 255).clip(0, 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("colour") / "db"
    return write_datum_lmdb(str(path), images, np.arange(40) % 3), images


@pytest.fixture(scope="module")
def grey_db(tmp_path_factory):
    images = np.random.default_rng(1).integers(0, 256, (10, 1, 6, 6), dtype=np.uint8)
    return write_datum_lmdb(str(tmp_path_factory.mktemp("grey") / "db"), images, np.zeros(10, np.int64))


def read_blob(path) -> np.ndarray:
    from pycaffe_lite.io.arrays import blobproto_to_array

    proto = caffe_pb2.BlobProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return blobproto_to_array(proto)


def test_pca_matches_numpy(colour_db, tmp_path):
    db, images = colour_db
    out = str(tmp_path / "pca.binaryproto")
    assert main(["--quiet", "data", "pca", db, out]) == 0
    arr = read_blob(out)
    assert arr.shape == (4, 3)
    pixels = images.transpose(1, 0, 2, 3).reshape(3, -1) / 255.0
    want_val, want_vec = np.linalg.eigh(np.cov(pixels, bias=True))
    np.testing.assert_allclose(arr[0], want_val[::-1], rtol=1e-4)
    assert np.all(np.diff(arr[0]) <= 0)
    for k in range(3):  # eigenvectors up to sign, as columns
        np.testing.assert_allclose(abs(arr[1:, k] @ want_vec[:, 2 - k]), 1, atol=1e-4)
    eigval, eigvec = pca.load_pca(out)
    np.testing.assert_allclose(eigval, arr[0], rtol=1e-6)
    np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-5)


def test_pca_of_grey_records_is_an_error(grey_db, tmp_path, capsys):
    assert main(["data", "pca", grey_db, str(tmp_path / "p")]) == 1
    assert "has 1-channel records; the RGB PCA needs 3 channels" in capsys.readouterr().err


def test_stats_match_numpy(colour_db, grey_db, tmp_path):
    db, images = colour_db
    out = str(tmp_path / "stats.binaryproto")
    assert main(["--quiet", "data", "stats", db, out]) == 0
    mean, std = pca.load_stats(out, 3)
    np.testing.assert_allclose(mean, images.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std, images.std(axis=(0, 2, 3)), rtol=1e-5)
    save_mean(pca.compute_stats(grey_db), str(tmp_path / "g"))
    assert read_blob(str(tmp_path / "g")).shape == (2, 1)


def test_whiten_tool(colour_db, tmp_path):
    db, images = colour_db
    # 3x8x8 = 192 values from 40 records: a rank-deficient covariance, so epsilon matters
    out = str(tmp_path / "zca.binaryproto")
    assert main(["--quiet", "data", "whiten", db, out, "--epsilon", "0.01"]) == 0
    arr = read_blob(out)
    assert arr.shape == (193, 192)
    np.testing.assert_allclose(arr[0], images.reshape(40, -1).mean(axis=0) / 255, atol=1e-6)
    np.testing.assert_allclose(arr[1:], arr[1:].T, atol=1e-4)  # ZCA is symmetric
    assert main(["--quiet", "data", "whiten", db, str(tmp_path / "pca"), "--epsilon", "0.01", "--mode", "pca"]) == 0
    assert read_blob(str(tmp_path / "pca")).shape == (193, 192)


def test_whiten_errors(colour_db, monkeypatch):
    db, _ = colour_db
    with pytest.raises(DataError, match="whitening epsilon must be >= 0, got -1"):
        pca.compute_whitening(db, -1)
    with pytest.raises(DataError, match="covariance of its 40 records is singular .* give a positive --epsilon"):
        pca.compute_whitening(db, 0)
    monkeypatch.setattr(pca, "MAX_WHITEN_DIM", 100)
    with pytest.raises(DataError, match=r"records of \(3, 8, 8\) = 192 values; .* limited to 100 values"):
        pca.compute_whitening(db, 0.1)


def test_tools_name_a_missing_database(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nope"), str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------- preview
AUG = "mirror: true crop_size: 6 max_rotation: 15 jitter_saturation: true jitter_value: true jitter_hue: true"


def test_preview_grid_size_and_seed(colour_db, tmp_path):
    db, _ = colour_db
    tp = tmp_path / "tp.prototxt"
    tp.write_text(AUG + " mean_value: 128 scale: 0.01\n")
    out = str(tmp_path / "grid.png")
    assert main(["--quiet", "data", "preview", "--model", str(tp), "--source", db, "--out", out, "--n", "10",
                 "--seed", "3"]) == 0
    img = Image.open(out)
    # 10 tiles: 4 columns x 3 rows of 6x6 crops magnified ceil(64 / 6) = 11 times, 2-pixel gaps
    assert img.size == (4 * 66 + 5 * 2, 3 * 66 + 4 * 2) and img.mode == "RGB"
    first = np.asarray(img).copy()
    write_preview(str(tp), out, source=db, n=10, seed=3)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), first)
    write_preview(str(tp), out, source=db, n=10, seed=4)
    assert not np.array_equal(np.asarray(Image.open(out)), first)


def test_preview_undoes_mean_and_scale(colour_db, tmp_path):
    """The shown samples equal the net's input with mean and scale undone (same seed, same draws)."""
    from google.protobuf import text_format

    from pycaffe_lite.data.transformer import DataTransformer
    from pycaffe_lite.rng import set_random_seed

    db, images = colour_db
    tp = text_format.Parse(AUG + " mean_value: 128 scale: 0.01", caffe_pb2.TransformationParameter())
    shown = augmented_samples(tp, db, n=8, seed=5)
    t = DataTransformer(tp, TRAIN, images.shape[1:])
    net_input = np.empty(t.output_shape(8), np.float32)
    set_random_seed(5)
    t.transform(images[:8], net_input)
    np.testing.assert_allclose(shown, np.clip((net_input / 0.01 + 128) / 255, 0, 1), atol=1e-4)


def test_preview_from_a_net_uses_its_data_layer(grey_db, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(f"""
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "nowhere" batch_size: 4 }} }}
layer {{ name: "d" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ max_rotation: 30 scale: 0.00390625 }}
  data_param {{ source: "{grey_db}" batch_size: 4 }} }}
""")
    out = str(tmp_path / "g.png")
    # 3 tiles: 2 columns x 2 rows of 6x6 records magnified twice
    assert write_preview(str(net), out, n=3, zoom=2) == (2 * 12 + 3 * 2, 2 * 12 + 3 * 2)
    assert Image.open(out).mode == "L"


def test_preview_errors(colour_db, tmp_path, capsys):
    db, _ = colour_db
    tp = tmp_path / "tp.prototxt"
    tp.write_text("random_scale_min: 2 random_scale_max: 1\n")
    assert main(["data", "preview", "--model", str(tp), "--source", db, "--out", str(tmp_path / "x.png")]) == 1
    assert "random_scale_min 2 is larger than random_scale_max 1" in capsys.readouterr().err
    tp.write_text("scale: 1\n")
    with pytest.raises(DataError, match="names no data source; give --source DB"):
        write_preview(str(tp), str(tmp_path / "x.png"))
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "i" type: "Input" top: "data" input_param { shape { dim: 1 } } }\n')
    with pytest.raises(NetConfigError, match="no Data layer in phase TRAIN"):
        write_preview(str(net), str(tmp_path / "x.png"), source=db)


def test_tile_grid_grey_and_colour_orders():
    x = np.zeros((2, 3, 1, 1), np.float32)
    x[:, 0] = 1  # channel 0 full: blue in BGR records, red in RGB ones
    bgr = tile_grid(x, zoom=1)
    rgb = tile_grid(x, zoom=1, rgb_order=True)
    assert bgr.shape == (1 + 2 * 2, 2 + 3 * 2, 3)
    assert tuple(bgr[2, 2]) == (0, 0, 255) and tuple(rgb[2, 2]) == (255, 0, 0)
    assert tile_grid(np.ones((5, 1, 2, 2), np.float32), zoom=1).shape == (2 * 2 + 3 * 2, 3 * 2 + 4 * 2)

"""DataTransformer's augmentation and pre-processing extensions: geometry, HSV jitter, fancy-PCA
lighting, std normalisation, whitening; seeds, phases and configuration errors."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.data.mean import save_mean
from pycaffe_lite.data.transformer import DataTransformer, warp_matrices
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.io.arrays import array_to_blobproto
from pycaffe_lite.kernels.augment import affine_warp
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.rng import set_random_seed

FULL = ("mirror: true crop_size: 6 random_scale_min: 0.8 random_scale_max: 1.25 max_rotation: 20 "
        "jitter_saturation: true jitter_value: true jitter_hue: true mean_value: 120 std_value: 60 scale: 2")


def tparam(text: str):
    return text_format.Parse(text, caffe_pb2.TransformationParameter())


def make(text: str, shape, phase: int = TRAIN) -> DataTransformer:
    return DataTransformer(tparam(text), phase, shape, "layer 'data' (Data)")


def run(text: str, batch: np.ndarray, phase: int = TRAIN, seed: int = 0):
    t = make(text, batch.shape[1:], phase)
    out = np.full(t.output_shape(len(batch)), np.nan, np.float32)
    set_random_seed(seed)
    t.transform(batch, out)
    return out, t


def save_blob(path, arr) -> str:
    save_mean(array_to_blobproto(np.asarray(arr, np.float32)), str(path))
    return str(path)


@pytest.fixture
def colour():
    return np.random.default_rng(0).integers(0, 256, (16, 3, 8, 8), dtype=np.uint8)


@pytest.fixture
def pca_file(tmp_path):
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    eigval = np.array([0.2, 0.02, 0.002])
    return save_blob(tmp_path / "pca.binaryproto", np.vstack([eigval, q])), eigval, q


# ---------------------------------------------------------------------------- reproducibility
def test_full_pipeline_follows_the_seed(colour, pca_file):
    text = FULL + f' pca_file: "{pca_file[0]}"'
    a, _ = run(text, colour, seed=3)
    b, _ = run(text, colour, seed=3)
    c, _ = run(text, colour, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and not np.array_equal(a, c)


def test_caffe_draws_come_first_and_are_unchanged(colour):
    """Adding augmentation does not change which crops and flips a seed gives."""
    _, t = run("mirror: true crop_size: 6 max_rotation: 10 jitter_value: true", colour, seed=5)
    _, t0 = run("mirror: true crop_size: 6", colour, seed=5)
    assert 0 < t.last_draws["mirror"].sum() < 16 and t.last_draws["h_off"].std() > 0
    for key in ("mirror", "h_off", "w_off"):
        np.testing.assert_array_equal(t.last_draws[key], t0.last_draws[key])


def test_test_phase_applies_no_random_augmentation(colour, pca_file):
    text = FULL.replace("mirror: true ", "") + f' pca_file: "{pca_file[0]}"'
    out, t = run(text, colour, TEST, seed=1)
    assert t.last_draws == {}
    centre = colour[:, :, 1:7, 1:7].astype(np.float32)
    np.testing.assert_allclose(out, (centre - 120) * np.float32(2 / 60), rtol=1e-6)


# ---------------------------------------------------------------------------- geometry
def test_scale_one_is_the_identity(colour):
    out, t = run("random_scale_min: 1 random_scale_max: 1", colour)
    assert not t.warp
    np.testing.assert_array_equal(out, colour.astype(np.float32))


def test_zoom_stretches_a_ramp_about_the_centre():
    ramp = np.tile(np.arange(9, dtype=np.float32) * 10, (2, 1, 9, 1))  # value = 10 x column
    out, t = run("random_scale_min: 2 random_scale_max: 2", ramp)
    np.testing.assert_array_equal(t.last_draws["scale"], [2, 2])
    cx = 4.0
    expected = (cx + (np.arange(9) - cx) / 2) * 10  # the source column of each output column
    np.testing.assert_allclose(out[:, 0], np.broadcast_to(expected, (2, 9, 9)), atol=1e-4)


def test_rotation_draws_are_in_range_and_applied(colour):
    big = np.repeat(colour, 4, axis=0).astype(np.float32)
    out, t = run("max_rotation: 30 fill_value: 7", big, seed=2)
    angles = t.last_draws["angle"]
    assert np.all(np.abs(angles) <= 30) and angles.std() > 5
    np.testing.assert_array_equal(t.last_draws["scale"], np.ones(len(big)))
    ref = np.empty_like(big)
    affine_warp(big, warp_matrices(np.ones(len(big)), angles, 8, 8), 7.0, ref)
    np.testing.assert_array_equal(out, ref)
    assert (out == 7).any()  # corners come from outside the image


def test_rotation_then_crop_then_mirror_in_order():
    """Warp the whole record, then crop (its offsets), then mirror."""
    x = np.random.default_rng(3).uniform(0, 255, (6, 1, 9, 9)).astype(np.float32)
    out, t = run("max_rotation: 45 crop_size: 5 mirror: true", x, seed=8)
    d = t.last_draws
    warped = np.empty_like(x)
    affine_warp(x, warp_matrices(d["scale"], d["angle"], 9, 9), 0.0, warped)
    for n in range(6):
        win = warped[n, :, d["h_off"][n]:d["h_off"][n] + 5, d["w_off"][n]:d["w_off"][n] + 5]
        np.testing.assert_array_equal(out[n], win[:, :, ::-1] if d["mirror"][n] else win)


# ---------------------------------------------------------------------------- colour
def test_hsv_neutral_ranges_are_the_identity(colour):
    text = ("jitter_saturation: true jitter_value: true jitter_hue: true jitter_power_min: 1 jitter_power_max: 1 "
            "jitter_factor_min: 1 jitter_factor_max: 1 jitter_offset: 0 jitter_hue_shift: 0")
    out, _ = run(text, colour)
    np.testing.assert_allclose(out, colour.astype(np.float32), atol=2e-3)
    assert out.min() >= 0 and out.max() <= 255


def test_hsv_default_ranges_stay_in_range_and_follow_the_issue(colour):
    big = np.repeat(colour, 8, axis=0)
    out, t = run("jitter_saturation: true jitter_value: true jitter_hue: true", big)
    assert out.min() >= 0 and out.max() <= 255 and not np.allclose(out, big)
    p = t.last_draws["hsv"]
    for col in (0, 3):
        assert p[:, col].min() >= 0.25 - 1e-6 and p[:, col].max() <= 4 + 1e-6
        assert (p[:, col] < 1).mean() > 0.25 and (p[:, col] > 1).mean() > 0.25  # log-uniform: both sides
        assert p[:, col + 1].min() >= 0.7 - 1e-6 and p[:, col + 1].max() <= 1.4 + 1e-6
        assert np.abs(p[:, col + 2]).max() <= 0.1 + 1e-7
    assert np.abs(p[:, 6]).max() <= 0.1 + 1e-7 and p[:, 6].std() > 0.02


def test_hue_alone_keeps_saturation_and_value(colour):
    out, _ = run("jitter_hue: true", colour)
    x = colour.astype(np.float32)
    np.testing.assert_allclose(out.max(axis=1), x.max(axis=1), atol=2e-3)  # V = max
    np.testing.assert_allclose(out.min(axis=1), x.min(axis=1), atol=2e-3)  # S = 1 - min/max
    assert np.abs(out - x).max() > 5


def test_value_offset_alone_brightens_by_the_offset():
    x = np.full((4, 3, 2, 2), 100, np.float32)
    x[:, 2] = 50
    text = ("jitter_value: true jitter_power_min: 1 jitter_power_max: 1 jitter_factor_min: 1 "
            "jitter_factor_max: 1 jitter_offset: 0.1")
    out, t = run(text, x)
    offset = t.last_draws["hsv"][:, 5]
    for n in range(4):  # the brightest channel moves by offset * 255; the hue and saturation stay
        np.testing.assert_allclose(out[n, :2], 100 + offset[n] * 255, atol=2e-3)
        np.testing.assert_allclose(out[n, 2], (100 + offset[n] * 255) / 2, atol=2e-3)


def test_pca_lighting_moves_the_colour_along_the_eigenvectors(pca_file):
    path, eigval, q = pca_file
    grey = np.full((500, 3, 3, 3), 128, np.uint8)
    out, t = run(f'pca_file: "{path}" pca_sigma: 0.1', grey)
    alpha = t.last_draws["pca_alpha"]
    assert alpha.shape == (500, 3) and 0.08 < alpha.std() < 0.12
    shift = out.mean(axis=(2, 3)) - 128  # (N, 3) change of the mean colour
    np.testing.assert_allclose(shift, (alpha * eigval) @ q.T * 255, atol=1e-3)
    # along the top eigenvector the change is alpha_0 * lambda_0 (in [0, 1] units)
    np.testing.assert_allclose(shift @ q[:, 0] / 255, alpha[:, 0] * eigval[0], atol=1e-5)


def test_pca_lighting_clips_to_the_pixel_range(pca_file):
    white = np.full((50, 3, 2, 2), 255, np.uint8)
    out, _ = run(f'pca_file: "{pca_file[0]}" pca_sigma: 1', white)
    assert out.max() <= 255 and out.min() >= 0 and out.min() < 255


def test_max_pixel_value_one_for_unit_records(pca_file):
    x = np.random.default_rng(4).uniform(0, 1, (4, 3, 5, 5)).astype(np.float32)
    out, _ = run("jitter_saturation: true jitter_value: true max_pixel_value: 1", x)
    assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out, x)


# ---------------------------------------------------------------------------- normalisation
def test_std_normalisation_gives_unit_std():
    rng = np.random.default_rng(5)
    mu, sd = np.array([100, 50, 200.0]), np.array([20, 5, 30.0])
    x = (rng.standard_normal((200, 3, 4, 4)) * sd[:, None, None] + mu[:, None, None]).astype(np.float32)
    m, s = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    text = " ".join(f"mean_value: {v}" for v in m) + " " + " ".join(f"std_value: {v}" for v in s)
    out, _ = run(text, x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, rtol=1e-4)
    one, _ = run("std_value: 4 scale: 2", x)  # one std for every channel, times scale
    np.testing.assert_allclose(one, x * np.float32(0.5), rtol=1e-6)


def test_stats_file(tmp_path):
    x = np.random.default_rng(6).uniform(0, 255, (5, 2, 3, 3)).astype(np.float32)
    path = save_blob(tmp_path / "stats.binaryproto", [[10, 20], [2, 4]])
    out, _ = run(f'stats_file: "{path}"', x)
    np.testing.assert_allclose(out, (x - np.array([10, 20], np.float32).reshape(2, 1, 1))
                               / np.array([2, 4], np.float32).reshape(2, 1, 1), rtol=1e-6)


def test_whitening_gives_identity_covariance_on_its_data(tmp_path):
    from pycaffe_lite.data.mnist import write_datum_lmdb
    from pycaffe_lite.data.pca import compute_whitening

    rng = np.random.default_rng(7)
    mix = rng.standard_normal((12, 12)) * 0.3 + np.eye(12)
    images = np.clip(rng.standard_normal((600, 12)) @ mix * 25 + 128, 0, 255).astype(np.uint8).reshape(600, 3, 2, 2)
    db = write_datum_lmdb(str(tmp_path / "db"), images, np.zeros(600, np.int64))
    for mode in ("zca", "pca"):
        path = str(tmp_path / f"{mode}.binaryproto")
        save_mean(compute_whitening(db, 1e-8, mode), path)
        out, _ = run(f'whiten_file: "{path}"', images)
        flat = out.reshape(600, -1).astype(np.float64)
        np.testing.assert_allclose(flat.mean(axis=0), 0, atol=1e-3)
        np.testing.assert_allclose(np.cov(flat, rowvar=False, bias=True), np.eye(12), atol=2e-3)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text,shape,message", [
    ("random_scale_min: 1.2 random_scale_max: 0.9", (3, 8, 8),
     "layer 'data' \\(Data\\): random_scale_min 1.2 is larger than random_scale_max 0.9; swap them"),
    ("random_scale_min: 0", (3, 8, 8), "random_scale_min and random_scale_max must be positive, got 0 and 1"),
    ("max_rotation: -5", (3, 8, 8), "max_rotation must be >= 0 degrees, got -5"),
    ("jitter_saturation: true", (1, 8, 8),
     "jitter_saturation need 3-channel colour records but these have 1 channel\\(s\\); remove it or set force_color"),
    ("jitter_hue: true jitter_value: true", (1, 8, 8), "jitter_value, jitter_hue need 3-channel"),
    ("jitter_power_min: 5", (3, 8, 8), "jitter_power_min 5 is larger than jitter_power_max 4; swap them"),
    ("jitter_factor_min: -1", (3, 8, 8), "jitter_factor_min and jitter_factor_max must be positive"),
    ("jitter_offset: -0.1", (3, 8, 8), "jitter_offset must be >= 0, got -0.1"),
    ("pca_sigma: -1", (3, 8, 8), "pca_sigma must be >= 0"),
    ("max_pixel_value: 0", (3, 8, 8), "max_pixel_value must be positive, got 0"),
    ("std_value: 1 std_value: 2", (3, 8, 8), "2 std_value entries for 3-channel records"),
    ("std_value: 0", (3, 8, 8), "std_value must be positive, got \\[0.0\\]"),
    ('stats_file: "s" mean_value: 3', (3, 8, 8), "stats_file holds the mean and std: give it without mean_file"),
    ('whiten_file: "w" mean_value: 3 scale: 0.5', (3, 8, 8),
     "whiten_file subtracts its own mean .* remove mean_value, scale"),
])
def test_config_errors(text, shape, message):
    with pytest.raises(NetConfigError, match=message):
        make(text, shape)


def test_grey_pca_is_an_error_in_test_phase_too(pca_file):
    with pytest.raises(NetConfigError, match="pca_file need 3-channel colour records"):
        make(f'pca_file: "{pca_file[0]}"', (1, 4, 4), TEST)


def test_file_errors(tmp_path):
    bad = save_blob(tmp_path / "bad.binaryproto", np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"layer 'data' \(Data\): PCA file '.*bad.binaryproto' holds a blob of shape "
                       r"\(3, 3\), expected \(4, 3\) .* `plite data pca DB OUT.binaryproto`"):
        make(f'pca_file: "{bad}"', (3, 8, 8))
    with pytest.raises(DataError, match=r"PCA file '.*missing' does not exist; create it with `plite data pca"):
        make(f'pca_file: "{tmp_path / "missing"}"', (3, 8, 8))
    with pytest.raises(DataError, match=r"stats file '.*' holds a blob of shape \(3, 3\), expected \(2, 3\)"):
        make(f'stats_file: "{bad}"', (3, 8, 8))
    white = save_blob(tmp_path / "w.binaryproto", np.zeros((13, 12)))
    make(f'whiten_file: "{white}"', (3, 2, 2))  # right size
    with pytest.raises(DataError, match=r"whitening file '.*w.binaryproto' holds a blob of shape \(13, 12\), "
                       r"expected \(4, 3\) .* without crop_size"):
        make(f'whiten_file: "{white}" crop_size: 1', (3, 2, 2))
    (tmp_path / "junk").write_bytes(b"\xff\xff\xff")
    with pytest.raises(DataError, match="is not a valid BlobProto"):
        make(f'pca_file: "{tmp_path / "junk"}"', (3, 8, 8))


# ---------------------------------------------------------------------------- through a net
def test_data_layer_follows_the_solver_random_seed(tmp_path, pca_file):
    from pycaffe_lite.data.mnist import write_datum_lmdb
    from pycaffe_lite.solvers import get_solver

    images = np.random.default_rng(9).integers(0, 256, (20, 3, 10, 10), dtype=np.uint8)
    db = write_datum_lmdb(str(tmp_path / "db"), images, np.arange(20) % 2)
    aug = (f'mirror: true crop_size: 8 random_scale_min: 0.9 random_scale_max: 1.1 max_rotation: 10 '
           f'jitter_saturation: true jitter_hue: true pca_file: "{pca_file[0]}" scale: 0.00390625')
    net = f"""
layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ {aug} }}
  data_param {{ source: "{db}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""
    (tmp_path / "net.prototxt").write_text(net)

    def batches(seed):
        (tmp_path / "solver.prototxt").write_text(
            f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.01 lr_policy: "fixed" max_iter: 2 random_seed: {seed}')
        solver = get_solver(str(tmp_path / "solver.prototxt"))
        out = []
        for _ in range(2):
            solver.net.forward()
            out.append(solver.net.blobs["data"].data.copy())
        return np.stack(out)

    a, b, c = batches(1), batches(1), batches(2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (2, 4, 3, 8, 8) and 0 <= a.min() and a.max() <= 1

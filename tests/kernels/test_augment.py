"""Augmentation kernels (affine_warp, rgb_to_hsv, jitter_hsv_to_rgb) against plain Python references.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels; the last test does that):
keep shapes small.
"""
from __future__ import annotations

import colorsys
import os
import subprocess
import sys

import numpy as np
import pytest

from pycaffe_lite.data.transformer import hsv_jitter, warp_matrices
from pycaffe_lite.kernels.augment import affine_warp, jitter_hsv_to_rgb, rgb_to_hsv
from tests.conftest import ROOT

SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 2, 4, 4)]


def warp_reference(src, mats, fill):
    """Bilinear sampling, one pixel at a time in float64."""
    N, C, H, W = src.shape
    out = np.empty(src.shape, np.float64)

    def at(img, y, x):
        return float(img[y, x]) if 0 <= y < H and 0 <= x < W else fill

    for n in range(N):
        m = mats[n]
        for y in range(H):
            for x in range(W):
                sx, sy = m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]
                x0, y0 = int(np.floor(sx)), int(np.floor(sy))
                ax, ay = sx - x0, sy - y0
                for c in range(C):
                    img = src[n, c]
                    out[n, c, y, x] = ((1 - ay) * ((1 - ax) * at(img, y0, x0) + ax * at(img, y0, x0 + 1))
                                       + ay * ((1 - ax) * at(img, y0 + 1, x0) + ax * at(img, y0 + 1, x0 + 1)))
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_warp_matches_reference(shape):
    rng = np.random.default_rng(0)
    src = rng.standard_normal(shape).astype(np.float32)
    mats = warp_matrices(rng.uniform(0.7, 1.4, shape[0]), rng.uniform(-40, 40, shape[0]), *shape[2:])
    out = np.full(shape, np.nan, np.float32)
    affine_warp(src, mats, -3.0, out)
    np.testing.assert_allclose(out, warp_reference(src, mats, -3.0), rtol=1e-5, atol=1e-5)


def test_warp_identity_and_uint8():
    src = np.random.default_rng(1).integers(0, 256, (2, 3, 6, 5), dtype=np.uint8)
    out = np.empty(src.shape, np.float32)
    affine_warp(src, warp_matrices(np.ones(2), np.zeros(2), 6, 5), 0.0, out)
    np.testing.assert_array_equal(out, src.astype(np.float32))


def test_warp_rotation_by_90_is_rot90():
    src = np.arange(2 * 1 * 5 * 5, dtype=np.float32).reshape(2, 1, 5, 5)
    out = np.empty_like(src)
    affine_warp(src, warp_matrices(np.ones(2), np.array([90.0, -90.0]), 5, 5), 0.0, out)
    np.testing.assert_allclose(out[0, 0], np.rot90(src[0, 0], 1), atol=1e-4)  # counter-clockwise
    np.testing.assert_allclose(out[1, 0], np.rot90(src[1, 0], -1), atol=1e-4)


def test_warp_zoom_out_fills_the_border():
    src = np.ones((1, 1, 9, 9), np.float32)
    out = np.empty_like(src)
    affine_warp(src, warp_matrices(np.array([0.5]), np.zeros(1), 9, 9), 7.0, out)
    assert out[0, 0, 4, 4] == 1  # the centre stays
    assert out[0, 0, 0, 0] == 7 and out[0, 0, 8, 8] == 7  # corners come from outside


def hsv_reference(x, params, max_value, r, b):
    out = np.empty(x.shape, np.float64)
    for n in range(x.shape[0]):
        sp, sf, so, vp, vf, vo, dh = (float(v) for v in params[n])
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                rgb = np.clip([x[n, r, i, j], x[n, 1, i, j], x[n, b, i, j]], 0, max_value) / max_value
                h, s, v = colorsys.rgb_to_hsv(*rgb)
                s = min(max(s ** sp * sf + so, 0), 1)
                v = min(max(v ** vp * vf + vo, 0), 1)
                rr, gg, bb = colorsys.hsv_to_rgb((h + dh) % 1.0, s, v)
                out[n, r, i, j], out[n, 1, i, j], out[n, b, i, j] = rr * max_value, gg * max_value, bb * max_value
    return out


def random_params(rng, n):
    return np.column_stack([
        rng.uniform(0.25, 4, n), rng.uniform(0.7, 1.4, n), rng.uniform(-0.1, 0.1, n),
        rng.uniform(0.25, 4, n), rng.uniform(0.7, 1.4, n), rng.uniform(-0.1, 0.1, n),
        rng.uniform(-0.5, 0.5, n)]).astype(np.float32)


def colour_images(shape, seed):
    x = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    x[0, :, 0, 0] = 128  # a grey pixel (hue undefined, saturation 0)
    x[-1, :, -1, -1] = 0  # black (saturation undefined)
    x[-1, :, 0, -1] = (255, 0, 0)  # a saturated primary
    return x


@pytest.mark.parametrize("shape,rgb", [((3, 3, 4, 5), True), ((1, 3, 1, 1), False), ((2, 3, 3, 2), False)])
def test_rgb_to_hsv_matches_colorsys(shape, rgb):
    x = colour_images(shape, 2)
    r, b = (0, 2) if rgb else (2, 0)
    out = np.full(shape, np.nan, np.float32)
    rgb_to_hsv(x, 255.0, r, b, out)
    ref = np.empty(shape)
    for n, i, j in np.ndindex(shape[0], shape[2], shape[3]):
        ref[n, :, i, j] = colorsys.rgb_to_hsv(x[n, r, i, j] / 255, x[n, 1, i, j] / 255, x[n, b, i, j] / 255)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("shape,rgb", [((3, 3, 4, 5), True), ((1, 3, 1, 1), False)])
def test_jitter_hsv_to_rgb_matches_colorsys(shape, rgb):
    rng = np.random.default_rng(3)
    hsv = rng.uniform(0, 1, shape).astype(np.float32)
    hsv[0, :, 0, 0] = (0.99999994, 1, 1)  # h6 rounds to 6 in float32: the sector wraps to red
    params = random_params(rng, shape[0])
    r, b = (0, 2) if rgb else (2, 0)
    out = np.full(shape, np.nan, np.float32)
    jitter_hsv_to_rgb(hsv, params, 2.0, r, b, out)
    ref = np.empty(shape)
    for n, i, j in np.ndindex(shape[0], shape[2], shape[3]):
        _, sf, so, _, vf, vo, dh = (float(v) for v in params[n])
        h, s, v = (float(c) for c in hsv[n, :, i, j])
        rgb_ = colorsys.hsv_to_rgb((h + dh) % 1.0, min(max(s * sf + so, 0), 1), min(max(v * vf + vo, 0), 1))
        ref[n, r, i, j], ref[n, 1, i, j], ref[n, b, i, j] = (2 * c for c in rgb_)
    np.testing.assert_allclose(out, ref, atol=2e-5)


@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (1, 3, 1, 1)])
def test_hsv_jitter_composition_matches_reference(shape):
    x = colour_images(shape, 4)
    params = random_params(np.random.default_rng(5), shape[0])
    out = np.full(shape, np.nan, np.float32)
    hsv_jitter(x, params, 255.0, 2, 0, np.empty_like(x), out)
    np.testing.assert_allclose(out, hsv_reference(x, params, 255.0, 2, 0), atol=2e-3)
    assert out.min() >= 0 and out.max() <= 255


def test_hsv_neutral_is_identity_in_place():
    x = np.random.default_rng(3).uniform(0, 1, (2, 3, 4, 4)).astype(np.float32)
    ref = x.copy()
    params = np.tile(np.array([1, 1, 0, 1, 1, 0, 0], np.float32), (2, 1))
    hsv_jitter(x, params, 1.0, 2, 0, np.empty_like(x), x)  # in place
    np.testing.assert_allclose(x, ref, atol=1e-6)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without the JIT")
def test_same_tests_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout

"""Contrastive-divergence kernels against plain NumPy (float64) references.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels): keep shapes small.
"""
import numpy as np
import pytest

from pycaffe_lite.kernels import sampling as K

SHAPES = {"random": (5, 7), "odd": (3, 13), "size1": (1, 1), "one_row": (1, 9)}


def rand(shape, seed, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_bernoulli_sample(shape):
    p = rand(shape, 0, 0.0, 1.0)
    u = rand(shape, 1, 0.0, 1.0)
    p.flat[0], u.flat[0] = 0.0, 0.0  # p = 0 never fires, even for u = 0
    out = np.full(shape, 7.0, np.float32)
    K.bernoulli_sample(p.ravel(), u.ravel(), out.ravel())
    np.testing.assert_array_equal(out, (u < p).astype(np.float32))
    # p = 1 always fires; out may alias p
    ones = np.ones(shape, np.float32)
    K.bernoulli_sample(ones.ravel(), u.ravel(), ones.ravel())
    assert np.all(ones == 1)
    # in place over the probabilities
    q = p.copy()
    K.bernoulli_sample(q.ravel(), u.ravel(), q.ravel())
    np.testing.assert_array_equal(q, out)


def test_bernoulli_sample_frequency():
    p = np.full(20000, 0.3, np.float32)
    u = np.random.default_rng(3).random(20000, dtype=np.float32)
    out = np.empty_like(p)
    K.bernoulli_sample(p, u, out)
    assert abs(out.mean() - 0.3) < 0.01


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_add_scaled(shape):
    x, out = rand(shape, 0), rand(shape, 1)
    expected = out.astype(np.float64) + 0.25 * x
    K.add_scaled(x.ravel(), np.float32(0.25), out.ravel())
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("split", [0, 1, "all"])
def test_signed_column_sums_add(shape, split):
    a, out = rand(shape, 0), rand(shape[1], 1)
    s = shape[0] if split == "all" else min(split, shape[0])
    a64 = a.astype(np.float64)
    expected = out + 0.5 * (a64[s:].sum(axis=0) - a64[:s].sum(axis=0))
    K.signed_column_sums_add(a, s, 0.5, out)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def ref_free_energy(x, pre, b, c, gaussian):
    x, pre, b, c = (v.astype(np.float64) for v in (x, pre, b, c))
    hidden = np.logaddexp(0.0, pre + c).sum(axis=1)
    visible = 0.5 * ((x - b) ** 2).sum(axis=1) if gaussian else -(x @ b)
    return visible - hidden


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("gaussian", [False, True])
def test_free_energy_rows(shape, gaussian):
    N, V = shape
    H = 4
    x, b = rand(shape, 0, 0, 1), rand(V, 1)
    pre, c = rand((N, H), 2, -40, 40), rand(H, 3)  # large |pre|: softplus must not overflow
    out = np.empty(N, np.float64)
    K.free_energy_rows(x, pre, b, c, gaussian, out)
    np.testing.assert_allclose(out, ref_free_energy(x, pre, b, c, gaussian), rtol=1e-12, atol=1e-9)
    out32 = np.empty(N, np.float32)
    K.free_energy_rows(x, pre, b, c, gaussian, out32)
    np.testing.assert_allclose(out32, out, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_squared_error_sum(shape):
    x, r = rand(shape, 0), rand(shape, 1)
    expected = ((x.astype(np.float64) - r) ** 2).sum()
    assert K.squared_error_sum(x.ravel(), r.ravel()) == pytest.approx(expected, rel=1e-12)

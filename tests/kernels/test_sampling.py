"""Contrastive-divergence kernels against plain NumPy (float64) references.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels): keep shapes small.
"""
import numpy as np
import pytest

from pycaffe_lite.kernels import sampling as K

SHAPES = {"random": (5, 7), "odd": (3, 13), "size1": (1, 1), "one_row": (1, 9)}
ids = pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())


def rand(shape, seed, low=-1.0, high=1.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def tanh_half(z):
    return np.tanh(0.5 * z.astype(np.float64))


def sig(z):
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


@ids
def test_add_bias_half(shape):
    a, bias = rand(shape, 0, -5, 5), rand(shape[1], 1)
    out = np.empty_like(a)
    K.add_bias_half(a, bias, out)
    np.testing.assert_allclose(out, 0.5 * (a.astype(np.float64) + bias), rtol=1e-6, atol=1e-7)
    K.add_bias_half(a, bias, a)  # in place
    np.testing.assert_array_equal(a, out)


@ids
def test_sigmoid_from_tanh(shape):
    z = rand(shape, 0, -30, 30)
    t = tanh_half(z).astype(np.float32)
    out = np.empty_like(t)
    K.sigmoid_from_tanh(t, out)
    np.testing.assert_allclose(out, sig(z), atol=2e-7)
    K.sigmoid_from_tanh(t, t)
    np.testing.assert_array_equal(t, out)


@ids
def test_sigmoid_from_tanh_sample(shape):
    t = rand(shape, 0)
    u = rand(shape, 1, 0.0, 1.0)
    t.flat[0], u.flat[0] = -1.0, 0.0  # p = 0 never fires, even for u = 0
    if t.size > 1:
        t.flat[1] = 1.0  # p = 1 always fires
    p, s = np.empty_like(t), np.full(shape, 7.0, np.float32)
    K.sigmoid_from_tanh_sample(t, u, p, s)
    expected_p = 0.5 * t.astype(np.float64) + 0.5
    np.testing.assert_allclose(p, expected_p, atol=1e-7)
    np.testing.assert_array_equal(s, (u < p).astype(np.float32))
    assert s.flat[0] == 0 and (t.size == 1 or s.flat[1] == 1)
    both = t.copy()
    K.sigmoid_from_tanh_sample(both, u, both, both)  # outputs aliasing the input: the sample remains
    np.testing.assert_array_equal(both, s)


def test_sampling_frequency():
    t = np.full((1, 20000), 2 * 0.3 - 1, np.float32)  # p = 0.3
    u = np.random.default_rng(3).random((1, 20000), dtype=np.float32)
    p, s = np.empty_like(t), np.empty_like(t)
    K.sigmoid_from_tanh_sample(t, u, p, s)
    assert abs(s.mean() - 0.3) < 0.01


@ids
def test_add_row_bias_half(shape):
    a, bias = rand(shape, 0, -5, 5), rand(shape[0], 1)
    out = np.empty_like(a)
    K.add_row_bias_half(a, bias, out)
    np.testing.assert_allclose(out, 0.5 * (a.astype(np.float64) + bias[:, None]), rtol=1e-6, atol=1e-7)
    K.add_row_bias_half(a, bias, a)  # in place
    np.testing.assert_array_equal(a, out)


@ids
def test_unit_major_kernels(shape):
    """The ``_t`` kernels read unit-major t (H, N) and item-major uniforms (N, H) and write the
    item-major top: the same numbers as the item-major kernels on the transposed arrays."""
    t, u = rand(shape, 0), rand(shape[::-1], 1, 0.0, 1.0)
    t.flat[0], u.flat[0] = -1.0, 0.0  # p = 0 never fires, even for u = 0
    top, neg, s = np.full(shape[::-1], 7.0, np.float32), np.empty_like(t), np.empty_like(t)
    K.hidden_data_sample_t(t, u, top, neg, s)
    p = 0.5 * t.astype(np.float64) + 0.5
    np.testing.assert_allclose(top, p.T, atol=1e-7)
    np.testing.assert_array_equal(neg, -top.T)
    np.testing.assert_array_equal(s, (u.T < top.T).astype(np.float32))
    assert s.flat[0] == 0
    top2, neg2 = np.empty_like(top), np.empty_like(t)
    K.hidden_data_t(t, top2, neg2)
    np.testing.assert_array_equal(top2, top)
    np.testing.assert_array_equal(neg2, neg)
    top3 = np.empty_like(top)
    K.sigmoid_from_tanh_t(t, top3)
    np.testing.assert_array_equal(top3, top)
    p4, s4 = np.empty_like(t), np.empty_like(t)
    K.sigmoid_from_tanh_sample_t(t, u, p4, s4)
    np.testing.assert_array_equal(p4, top.T)
    np.testing.assert_array_equal(s4, s)


@ids
def test_row_sums_add(shape):
    a = rand(shape, 0)
    out = rand(shape[0], 1)
    want = out + 0.5 * a.astype(np.float64).sum(axis=1)
    K.row_sums_add(a, np.float32(0.5), out)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


@ids
def test_copy_min_max(shape):
    x = rand(shape, 0)
    out = np.empty((shape[0] * 2, shape[1]), np.float32)
    lo, hi = K.copy_min_max(x, out[: shape[0]])  # into the first rows of a bigger buffer
    np.testing.assert_array_equal(out[: shape[0]], x)
    assert (lo, hi) == (x.min(), x.max())
    x.flat[-1] = np.nan
    lo, hi = K.copy_min_max(x, out[: shape[0]])
    assert np.isnan(lo) and np.isnan(hi)


@ids
def test_add_scaled(shape):
    x, out = rand(shape, 0).ravel(), rand(shape, 1).ravel()
    expected = out.astype(np.float64) + 0.25 * x
    K.add_scaled(x, np.float32(0.25), out)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


@ids
@pytest.mark.parametrize("split", [0, 1, "all"])
def test_signed_column_sums_add(shape, split):
    a, out = rand(shape, 0), rand(shape[1], 1)
    s = shape[0] if split == "all" else min(split, shape[0])
    a64 = a.astype(np.float64)
    expected = out + 0.5 * (a64[s:].sum(axis=0) - a64[:s].sum(axis=0))
    scratch = np.full(shape[1] + 3, 99.0)  # stale values must not leak in
    K.signed_column_sums_add(a, s, np.float32(0.5), scratch, out)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def ref_free_energy(x, pre, b, c, gaussian):
    x, pre, b, c = (v.astype(np.float64) for v in (x, pre, b, c))
    hidden = np.logaddexp(0.0, pre + c).sum(axis=1)
    visible = 0.5 * ((x - b) ** 2).sum(axis=1) if gaussian else -(x @ b)
    return visible - hidden


@ids
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


@ids
def test_squared_error_sum(shape):
    x, r = rand(shape, 0), rand(shape, 1)
    expected = ((x.astype(np.float64) - r) ** 2).sum()
    assert K.squared_error_sum(x, r) == pytest.approx(expected, rel=1e-12)


def test_kernels_on_halves_match_whole_arrays():
    """The RBM layer runs the kernels on halves (row blocks of unit-major arrays, column slices
    of item-major ones: strided views) from two threads: each half writes only its part, and
    together they equal the kernel on the whole array."""
    t, u = rand((21, 4), 0), rand((4, 21), 1, 0.0, 1.0)
    bias = rand(21, 2)
    biased_whole, biased = np.empty_like(t), np.full_like(t, 9.0)
    K.add_row_bias_half(t, bias, biased_whole)
    whole = [np.empty_like(u), np.empty_like(t), np.empty_like(t)]
    K.hidden_data_sample_t(t, u, *whole)
    halves = [np.full_like(u, 9.0), np.full_like(t, 9.0), np.full_like(t, 9.0)]
    for j in (slice(0, 16), slice(16, 21)):
        K.add_row_bias_half(t[j], bias[j], biased[j])
        K.hidden_data_sample_t(t[j], u[:, j], halves[0][:, j], halves[1][j], halves[2][j])
    np.testing.assert_array_equal(biased, biased_whole)
    for got, want in zip(halves, whole):
        np.testing.assert_array_equal(got, want)
    v = u.copy()
    s_whole, s_half = np.empty_like(v), np.full_like(v, 9.0)
    p_whole, p_half = np.empty_like(v), np.full_like(v, 9.0)
    K.sigmoid_from_tanh_sample(v, u, p_whole, s_whole)
    for j in (slice(0, 16), slice(16, 21)):
        K.sigmoid_from_tanh_sample(v[:, j], u[:, j], p_half[:, j], s_half[:, j])
    np.testing.assert_array_equal(p_half, p_whole)
    np.testing.assert_array_equal(s_half, s_whole)

"""The update kernels against plain NumPy on random, odd and size-1 shapes, and their pure
Python versions (what runs under NUMBA_DISABLE_JIT=1) against the compiled ones, bit for bit."""
import numpy as np
import pytest

from pycaffe_lite.kernels import solver_updates as K

F = np.float32
SIZES = [1, 7, 1000]


def arrays(n, k, seed=0, positive=()):
    rng = np.random.default_rng(seed + n)
    out = [rng.standard_normal(n).astype(np.float32) for _ in range(k)]
    for i in positive:
        out[i] = np.abs(out[i])
    return out


CASES = {
    # name: (kernel, number of arrays, indices of arrays that must be >= 0, scalars, numpy reference)
    "sgd": (K.sgd_update, 2, (), (F(0.9), F(0.01)),
            lambda g, h, mu, lr: ((mu * h + lr * g),) * 2),
    "nesterov": (K.nesterov_update, 2, (), (F(0.9), F(0.01)),
                 lambda g, h, mu, lr: ((1 + mu) * (mu * h + lr * g) - mu * h, mu * h + lr * g)),
    "adagrad": (K.adagrad_update, 2, (1,), (F(1e-8), F(0.01)),
                lambda g, h, d, lr: (lr * g / (np.sqrt(h + g * g) + d), h + g * g)),
    "rmsprop": (K.rmsprop_update, 2, (1,), (F(0.98), F(1e-8), F(0.01)),
                lambda g, h, r, d, lr: (lr * g / (np.sqrt(r * h + (1 - r) * g * g) + d), r * h + (1 - r) * g * g)),
    "adadelta": (K.adadelta_update, 3, (1, 2), (F(0.95), F(1e-6), F(1.0)),
                 lambda g, h1, h2, m, d, lr: _adadelta(g, h1, h2, m, d, lr)),
    "adam": (K.adam_update, 3, (2,), (F(0.9), F(0.999), F(1e-8), F(0.001)),
             lambda g, m, v, b1, b2, e, s: (s * (b1 * m + (1 - b1) * g) / (np.sqrt(b2 * v + (1 - b2) * g * g) + e),
                                            b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g)),
    "l2": (K.l2_regularize, 2, (), (F(0.3),), lambda w, g, d: (w, g + d * w)),
    "l1": (K.l1_regularize, 2, (), (F(0.3),), lambda w, g, d: (w, g + d * np.sign(w))),
    "scale": (K.scale_inplace, 1, (), (F(0.25),), lambda x, a: (a * x,)),
}


def _adadelta(g, h1, h2, m, d, lr):
    h1n = m * h1 + (1 - m) * g * g
    u = g * np.sqrt((h2 + d) / (h1n + d))
    return lr * u, h1n, m * h2 + (1 - m) * u * u


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("n", SIZES)
def test_kernel_matches_numpy(name, n):
    kernel, k, positive, scalars, ref = CASES[name]
    arrs = arrays(n, k, positive=positive)
    if name == "l1":
        arrs[0][: max(1, n // 3)] = 0  # sign(0) = 0
    expected = ref(*[a.astype(np.float64) for a in arrs], *[float(s) for s in scalars])
    kernel(*arrs, *scalars)
    for got, want in zip(arrs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pure_python_equals_compiled(name):
    kernel, k, positive, scalars, _ = CASES[name]
    a = arrays(7, k, seed=3, positive=positive)
    b = [x.copy() for x in a]
    kernel(*a, *scalars)
    getattr(kernel, "py_func", kernel)(*b, *scalars)  # the plain function under NUMBA_DISABLE_JIT
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_sumsq():
    x = arrays(1001, 1)[0]
    assert K.sumsq(x) == pytest.approx(float(np.sum(x.astype(np.float64) ** 2)), rel=1e-12)
    assert K.sumsq(np.zeros(0, np.float32)) == 0.0

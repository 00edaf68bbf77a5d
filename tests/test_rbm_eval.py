"""rbm_eval: free energy, reconstruction error, pseudo-log-likelihood, exact log Z by
enumeration, and AIS against enumeration."""
import itertools
import math

import numpy as np
import pytest

from pycaffe_lite import rbm_eval as E


def model(H, V, seed=0, scale=1.0):
    rs = np.random.default_rng(seed)
    return rs.normal(0, scale, (H, V)), rs.normal(0, 1, V), rs.normal(0, 1, H)


def binary(N, V, seed=1):
    return (np.random.default_rng(seed).random((N, V)) < 0.4).astype(np.float64)


def energy(x, h, W, b, c, gaussian=False):
    vis = 0.5 * np.sum((x - b) ** 2) if gaussian else -(b @ x)
    return vis - c @ h - h @ W @ x


def all_states(n):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def test_two_unit_example():
    """Energy(a, b) = -a b: Z = 3 + e and P(1, 1) = e / (3 + e)."""
    W, b, c = np.ones((1, 1)), np.zeros(1), np.zeros(1)
    log_z = E.exact_log_partition(W, b, c)
    assert log_z == pytest.approx(math.log(3 + math.e), rel=1e-14)
    assert math.exp(-energy(np.ones(1), np.ones(1), W, b, c) - log_z) == pytest.approx(math.e / (3 + math.e))
    # the marginal P(a = 1) = (1 + e) / (3 + e)
    assert E.exact_log_likelihood(np.ones((1, 1)), W, b, c) == pytest.approx(math.log((1 + math.e) / (3 + math.e)))


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_free_energy_matches_enumeration_over_h(kind):
    gaussian = kind == "gaussian"
    W, b, c = model(4, 5)
    xs = np.random.default_rng(2).normal(size=(3, 5)) if gaussian else binary(3, 5)
    hs = all_states(4)
    for x, f in zip(xs, E.free_energy(xs, W, b, c, kind)):
        brute = -np.log(sum(np.exp(-energy(x, h, W, b, c, gaussian)) for h in hs))
        assert f == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("H,V", [(3, 5), (6, 4)])  # enumerates hidden, then visible states
def test_exact_log_partition_matches_brute_force(H, V):
    W, b, c = model(H, V)
    brute = np.log(sum(np.exp(-energy(x, h, W, b, c)) for x in all_states(V) for h in all_states(H)))
    assert E.exact_log_partition(W, b, c) == pytest.approx(brute, rel=1e-12)
    # the probabilities of all visible states sum to 1
    assert np.exp(-E.free_energy(all_states(V), W, b, c) - E.exact_log_partition(W, b, c)).sum() == pytest.approx(1)


def test_exact_log_partition_gaussian_integrates_to_one():
    W, b, c = np.array([[0.7], [-0.4]]), np.array([0.3]), np.array([-0.2, 0.5])
    xs = np.linspace(-25, 25, 200001)
    density = np.exp(-E.free_energy(xs[:, None], W, b, c, "gaussian") - E.exact_log_partition(W, b, c, "gaussian"))
    assert np.trapezoid(density, xs) == pytest.approx(1.0, rel=1e-9)


def test_exact_log_partition_refuses_huge_models():
    W, b, c = np.zeros((30, 40)), np.zeros(40), np.zeros(30)
    with pytest.raises(ValueError, match=r"2\^30 hidden states is too many.*2\^22.*ais_log_partition"):
        E.exact_log_partition(W, b, c)
    with pytest.raises(ValueError, match=r"2\^30 hidden states"):
        E.exact_log_partition(np.zeros((30, 3)), np.zeros(3), np.zeros(30), "gaussian")


def test_bad_arguments():
    W, b, c = model(3, 4)
    with pytest.raises(ValueError, match=r"W must have shape \(H, V\) = \(3, 5\)"):
        E.free_energy(binary(2, 5), W, np.zeros(5), c)
    with pytest.raises(ValueError, match="5 values per item but the RBM has 4"):
        E.free_energy(binary(2, 5), W, b, c)
    with pytest.raises(ValueError, match="visible_type"):
        E.free_energy(binary(2, 4), W, b, c, "softmax")
    with pytest.raises(ValueError, match="betas"):
        E.ais_log_partition(W, b, c, betas=[0.0, 0.5])
    with pytest.raises(ValueError, match="n_runs"):
        E.ais_log_partition(W, b, c, n_runs=1)


def test_reconstruction_error():
    W, b, c = model(3, 6)
    x = binary(4, 6)
    r = 1 / (1 + np.exp(-(1 / (1 + np.exp(-(x @ W.T + c))) @ W + b)))
    assert E.reconstruction_error(x, W, b, c) == pytest.approx(np.sum((x - r) ** 2) / 4, rel=1e-12)
    g = (1 / (1 + np.exp(-(x @ W.T + c)))) @ W + b
    assert E.reconstruction_error(x, W, b, c, "gaussian") == pytest.approx(np.sum((x - g) ** 2) / 4, rel=1e-12)


def test_pseudo_log_likelihood_matches_direct_computation():
    """scikit-learn's score_samples estimator: flip one random bit per item,
    V * log sigmoid(F(x_flipped) - F(x)); and its exact expectation over the bit."""
    W, b, c = model(4, 7)
    x = binary(5, 7)
    pll = E.pseudo_log_likelihood(x, W, b, c, rng=np.random.default_rng(9))
    idx = np.random.default_rng(9).integers(0, 7, size=5)
    direct, exact = [], []
    for n in range(5):
        x_flip = x[n].copy()
        x_flip[idx[n]] = 1 - x_flip[idx[n]]
        gap = E.free_energy(x_flip, W, b, c)[0] - E.free_energy(x[n], W, b, c)[0]
        direct.append(7 * math.log(1 / (1 + math.exp(-gap))))
        # log P(x_i | x_rest) by enumeration of the joint, summed over i
        log_p = -E.free_energy(all_states(7), W, b, c)
        total = 0.0
        for i in range(7):
            same = np.all(np.delete(all_states(7), i, axis=1) == np.delete(x[n], i), axis=1)
            row = np.flatnonzero(np.all(all_states(7) == x[n], axis=1))[0]
            total += log_p[row] - np.log(np.exp(log_p[same]).sum())
        exact.append(total)
    np.testing.assert_allclose(pll, direct, rtol=1e-10)
    np.testing.assert_allclose(E.pseudo_log_likelihood(x, W, b, c), exact, rtol=1e-10)


def test_ais_agrees_with_enumeration():
    W, b, c = model(8, 12, seed=4)
    exact = E.exact_log_partition(W, b, c)
    data = binary(50, 12, seed=5)
    est = E.ais_log_partition(W, b, c, n_runs=200, betas=np.linspace(0, 1, 1500), rng=np.random.default_rng(6),
                              base_visible_bias=E.base_rate_visible_bias(data))
    assert 0 < est.stderr < 0.05
    assert abs(est.log_z - exact) < max(3 * est.stderr, 1e-3) and abs(est.log_z - exact) < 0.1
    ll = E.ais_log_likelihood(data, W, b, c, n_runs=200, betas=np.linspace(0, 1, 1500), rng=np.random.default_rng(7))
    assert abs(ll.mean - E.exact_log_likelihood(data, W, b, c)) < max(3 * ll.stderr, 1e-3)


def test_ais_gaussian_agrees_with_enumeration():
    W, b, c = model(6, 5, seed=8, scale=0.5)
    exact = E.exact_log_partition(W, b, c, "gaussian")
    est = E.ais_log_partition(W, b, c, n_runs=200, betas=np.linspace(0, 1, 1000), rng=np.random.default_rng(2),
                              visible_type="gaussian")
    assert abs(est.log_z - exact) < max(3 * est.stderr, 1e-3) and abs(est.log_z - exact) < 0.1


def test_default_betas_and_base_rates():
    betas = E.default_betas()
    assert betas.size == 14501 and betas[0] == 0 and betas[-1] == 1 and np.all(np.diff(betas) > 0)
    x = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    bias = E.base_rate_visible_bias(x)
    np.testing.assert_allclose(bias, [math.log(1e-3 / (1 - 1e-3)), math.log((1 - 1e-3) / 1e-3), 0.0])


def test_gibbs_sample():
    W, b, c = model(3, 6)
    x0 = binary(400, 6)
    samples, means = E.gibbs_sample(W, b, c, x0, n_steps=30, rng=np.random.default_rng(0))
    assert samples.shape == means.shape == (400, 6)
    assert set(np.unique(samples)) <= {0.0, 1.0} and np.all((means > 0) & (means < 1))
    # after burn-in the chains sample the model: compare the visible marginals with enumeration
    p = np.exp(-E.free_energy(all_states(6), W, b, c) - E.exact_log_partition(W, b, c))
    np.testing.assert_allclose(samples.mean(0), p @ all_states(6), atol=0.08)

"""Evaluating restricted Boltzmann machines: free energy, reconstruction error,
pseudo-log-likelihood, the exact log-likelihood of tiny models, and AIS estimates of log Z.

Parameters are given as arrays in the RBM layer's blob order: ``W`` (H, V), visible bias
``b`` (V,), hidden bias ``c`` (H,) -- e.g. ``W, b, c = (blob.data for blob in
net.layer_dict["rbm1"].blobs)``, or :func:`params_from_layer`.  ``visible_type`` is
``"bernoulli"`` or ``"gaussian"`` (unit variance), or the ``RBMParameter`` enum value.
Energies (natural logarithms throughout; log-likelihoods are in nats)::

    Bernoulli: E(x, h) = -b.x - c.h - h.W x,          F(x) = -b.x - sum_j softplus(c_j + W_j x)
    Gaussian:  E(x, h) = 0.5||x - b||^2 - c.h - h.W x, F(x) = 0.5||x - b||^2 - sum_j softplus(c_j + W_j x)

so ``p(x) = exp(-F(x)) / Z`` (a density for Gaussian units).  Everything is computed in
float64 except the large matrix products of AIS (float32 BLAS, then float64).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

#: enumerating more states than this is refused (2^22 ~ 4 million)
MAX_ENUMERATION_BITS = 22
_CHUNK_BITS = 14


class AISEstimate(NamedTuple):
    """``log_z`` and its standard error ``stderr`` (nats), from ``n_runs`` importance weights."""

    log_z: float
    stderr: float


class LogLikelihood(NamedTuple):
    """Mean log-likelihood of a data set (nats per item) and its error bar."""

    mean: float
    stderr: float


# ------------------------------------------------------------------------------ helpers
def _visible_kind(visible_type) -> str:
    if isinstance(visible_type, str):
        kind = visible_type.lower()
    else:
        kind = {0: "bernoulli", 1: "gaussian"}.get(int(visible_type), str(visible_type))
    if kind not in ("bernoulli", "gaussian"):
        raise ValueError(f"visible_type must be 'bernoulli' or 'gaussian' (or 0 / 1), got {visible_type!r}")
    return kind


def _params(W, b, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    if W.ndim != 2 or W.shape != (c.size, b.size):
        raise ValueError(f"W must have shape (H, V) = ({c.size}, {b.size}) to match c and b, got {W.shape}")
    return W, b, c


def _data(x, V: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
    if x.shape[1] != V:
        raise ValueError(f"data has {x.shape[1]} values per item but the RBM has {V} visible units")
    return x


def softplus(z: np.ndarray) -> np.ndarray:
    """``log(1 + exp(z))`` without overflow."""
    return np.logaddexp(0.0, z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * np.tanh(0.5 * z) + 0.5


def _logsumexp(a: np.ndarray) -> float:
    m = float(np.max(a))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(a - m))))


def _bit_states(start: int, stop: int, n_bits: int) -> np.ndarray:
    """Rows ``start..stop-1`` of the table of all ``n_bits``-bit binary vectors (bit i of k)."""
    k = np.arange(start, stop, dtype=np.int64)[:, None]
    return ((k >> np.arange(n_bits, dtype=np.int64)) & 1).astype(np.float64)


def params_from_layer(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(W, b, c, visible_type)`` of an RBM layer (copies of its blobs)."""
    W, b, c = (blob.data.copy() for blob in layer.blobs)
    return W, b, c, _visible_kind(layer.layer_param.rbm_param.visible_type)


# ------------------------------------------------------------------------------ per item
def free_energy(x, W, b, c, visible_type="bernoulli") -> np.ndarray:
    """``F(x)`` for each row of ``x`` (N, V): ``-log sum_h exp(-E(x, h))``; shape (N,)."""
    W, b, c = _params(W, b, c)
    x = _data(x, b.size)
    hidden = softplus(x @ W.T + c).sum(axis=1)
    if _visible_kind(visible_type) == "gaussian":
        return 0.5 * np.sum((x - b) ** 2, axis=1) - hidden
    return -(x @ b) - hidden


def reconstruction(x, W, b, c, visible_type="bernoulli") -> np.ndarray:
    """The deterministic (mean-field) reconstruction ``E[x | h = P(h | x)]``, shape (N, V)."""
    W, b, c = _params(W, b, c)
    x = _data(x, b.size)
    mean = sigmoid(x @ W.T + c) @ W + b
    return mean if _visible_kind(visible_type) == "gaussian" else sigmoid(mean)


def reconstruction_error(x, W, b, c, visible_type="bernoulli") -> float:
    """``(1/N) sum_n ||x_n - xr_n||^2`` with the mean-field reconstruction ``xr`` of
    :func:`reconstruction` -- the same quantity as the RBM layer's top 1."""
    x2 = _data(x, np.asarray(b).size)
    r = reconstruction(x2, W, b, c, visible_type)
    return float(np.sum((x2 - r) ** 2) / x2.shape[0])


def pseudo_log_likelihood(x, W, b, c, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pseudo-log-likelihood of each row of binary ``x`` (Bernoulli visible units), shape (N,).

    With ``rng``: scikit-learn's ``BernoulliRBM.score_samples`` estimator -- flip one visible
    unit ``i`` chosen uniformly per item (``x_i -> 1 - x_i``) and return
    ``V * log sigmoid(F(x_flipped) - F(x))``.  Without ``rng``: its expectation over ``i``,
    the exact pseudo-log-likelihood ``sum_i log P(x_i | x_{-i}) = sum_i log sigmoid(F(x with
    x_i flipped) - F(x))`` (deterministic; N*V free energies, computed by rank-one updates).
    """
    W, b, c = _params(W, b, c)
    x = _data(x, b.size)
    N, V = x.shape
    pre = x @ W.T + c
    hidden = softplus(pre).sum(axis=1)
    if rng is not None:
        i = rng.integers(0, V, size=N)
        rows = np.arange(N)
        d = 1.0 - 2.0 * x[rows, i]  # +1 turns a 0 on, -1 turns a 1 off
        pre_f = pre + d[:, None] * W[:, i].T
        fe_gap = -d * b[i] - softplus(pre_f).sum(axis=1) + hidden  # F(x_flipped) - F(x)
        return -V * softplus(-fe_gap)  # V * log sigmoid(gap)
    out = np.empty(N)
    for n in range(N):
        d = 1.0 - 2.0 * x[n]                          # (V,)
        pre_f = pre[n][None, :] + d[:, None] * W.T    # (V, H): item n with bit i flipped
        fe_gap = -d * b - softplus(pre_f).sum(axis=1) + hidden[n]
        out[n] = -np.sum(softplus(-fe_gap))
    return out


# ------------------------------------------------------------------------------ exact
def exact_log_partition(W, b, c, visible_type="bernoulli") -> float:
    """``log Z`` by enumerating the smaller layer's states (hidden only, for Gaussian visible).

    Refuses models needing more than ``2**22`` states.  Bernoulli visible units:
    ``Z = sum_h exp(c.h) prod_i (1 + exp(b_i + (W^T h)_i)) = sum_x exp(-F(x))``.
    Gaussian (unit variance): ``Z = (2 pi)^(V/2) sum_h exp(c.h + b.W^T h + 0.5 ||W^T h||^2)``.
    """
    W, b, c = _params(W, b, c)
    kind = _visible_kind(visible_type)
    H, V = W.shape
    over_hidden = kind == "gaussian" or H <= V
    n_bits = H if over_hidden else V
    if n_bits > MAX_ENUMERATION_BITS:
        layer = "hidden" if over_hidden else "visible"
        raise ValueError(
            f"exact_log_partition: enumerating 2^{n_bits} {layer} states is too many (the limit is "
            f"2^{MAX_ENUMERATION_BITS}); use ais_log_partition for models this size"
        )
    chunk = 1 << _CHUNK_BITS
    parts = []
    for start in range(0, 1 << n_bits, chunk):
        s = _bit_states(start, min(start + chunk, 1 << n_bits), n_bits)
        if kind == "gaussian":
            m = s @ W
            parts.append(_logsumexp(s @ c + m @ b + 0.5 * np.sum(m * m, axis=1)))
        elif over_hidden:
            parts.append(_logsumexp(s @ c + softplus(s @ W + b).sum(axis=1)))
        else:
            parts.append(_logsumexp(-free_energy(s, W, b, c)))
    log_z = _logsumexp(np.asarray(parts))
    if kind == "gaussian":
        log_z += 0.5 * V * math.log(2.0 * math.pi)
    return log_z


def exact_log_likelihood(x, W, b, c, visible_type="bernoulli") -> float:
    """Mean over the rows of ``x`` of ``log p(x) = -F(x) - log Z`` (nats), Z by enumeration."""
    return float(np.mean(-free_energy(x, W, b, c, visible_type))) - exact_log_partition(W, b, c, visible_type)


# ------------------------------------------------------------------------------ AIS
def default_betas() -> np.ndarray:
    """Salakhutdinov & Murray's (2008) schedule: 500 steps of inverse temperature in
    [0, 0.5), 4,000 in [0.5, 0.9), 10,000 in [0.9, 1.0]; 14,501 values from 0 to 1."""
    return np.concatenate([
        np.linspace(0.0, 0.5, 500, endpoint=False),
        np.linspace(0.5, 0.9, 4000, endpoint=False),
        np.linspace(0.9, 1.0, 10001),
    ])


def base_rate_visible_bias(x, visible_type="bernoulli", eps: float = 1e-3) -> np.ndarray:
    """Visible biases of the base-rate model for AIS: the maximum-likelihood fit of the
    data's marginals -- ``logit(mean x)`` with the means clipped to ``[eps, 1 - eps]``
    (Bernoulli), the data mean (Gaussian)."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    mean = x.mean(axis=0)
    if _visible_kind(visible_type) == "gaussian":
        return mean
    p = np.clip(mean, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def ais_log_partition(
    W, b, c, n_runs: int = 100, betas=None, rng: np.random.Generator | None = None,
    base_visible_bias=None, visible_type="bernoulli",
) -> AISEstimate:
    """Estimate ``log Z`` by annealed importance sampling (Salakhutdinov & Murray 2008).

    The base model A has no weights, visible biases ``base_visible_bias`` (default 0; the
    data's base rates, :func:`base_rate_visible_bias`, give far better estimates) and the
    target's number of hidden units with zero biases, so ``log Z_A = H log 2 + sum_i
    softplus(b_A,i)`` (Gaussian: ``H log 2 + (V/2) log 2 pi``).  The intermediate models
    ``p_k(x) ~ exp((1 - beta_k) (-E_A(x)) - beta_k F_B-part(x))``, i.e. with the hidden units
    summed out::

        log p*_k(x) = (1 - beta_k) b_A.x + beta_k b.x + sum_j softplus(beta_k (c_j + W_j x))

    (Gaussian: ``-0.5 (1 - beta_k) ||x - b_A||^2 - 0.5 beta_k ||x - b||^2 + ...``).  Each run
    draws ``x_0`` exactly from A, and for k = 1..K adds ``log p*_k(x) - log p*_{k-1}(x)`` to
    its log weight, then moves ``x`` by one Gibbs sweep (h | x, then x | h) that leaves
    ``p_k`` invariant.  ``log Z = log Z_A + log mean(w)``; ``stderr`` is the delta-method
    standard error ``std(w) / (sqrt(n_runs) mean(w))``.

    Parameters
    ----------
    n_runs : independent annealing runs (importance weights).
    betas : increasing inverse temperatures from 0 to 1 (default :func:`default_betas`).
    rng : a NumPy Generator (default ``np.random.default_rng()``).
    """
    W, b, c = _params(W, b, c)
    kind = _visible_kind(visible_type)
    H, V = W.shape
    rng = np.random.default_rng() if rng is None else rng
    betas = default_betas() if betas is None else np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) <= 0):
        raise ValueError("betas must increase strictly from 0.0 to 1.0 (at least two values)")
    if n_runs < 2:
        raise ValueError(f"n_runs must be at least 2 to give an error bar, got {n_runs}")
    b_a = np.zeros(V) if base_visible_bias is None else np.asarray(base_visible_bias, dtype=np.float64).reshape(-1)
    if b_a.size != V:
        raise ValueError(f"base_visible_bias has {b_a.size} values for {V} visible units")
    gaussian = kind == "gaussian"
    W32 = W.astype(np.float32)
    if gaussian:
        log_z_a = H * math.log(2.0) + 0.5 * V * math.log(2.0 * math.pi)
        x = b_a + rng.standard_normal((n_runs, V))
    else:
        log_z_a = H * math.log(2.0) + float(np.sum(softplus(b_a)))
        x = (rng.random((n_runs, V)) < sigmoid(b_a)).astype(np.float64)

    def pre(x):  # c + x W^T, product in float32 BLAS
        return (x.astype(np.float32) @ W32.T).astype(np.float64) + c

    def visible_term(x):  # d/d beta of the visible part of log p*_beta(x)
        if gaussian:
            return -0.5 * (np.sum((x - b) ** 2, axis=1) - np.sum((x - b_a) ** 2, axis=1))
        return x @ (b - b_a)

    log_w = np.zeros(n_runs)
    a = pre(x)
    hid_prev = H * math.log(2.0)  # sum_j softplus(0 * a_j)
    for k in range(1, betas.size):
        beta, prev = betas[k], betas[k - 1]
        log_w += (beta - prev) * visible_term(x) + softplus(beta * a).sum(axis=1) - hid_prev
        if k == betas.size - 1:
            break
        h = (rng.random((n_runs, H)) < sigmoid(beta * a)).astype(np.float32)
        mean = (1.0 - beta) * b_a + beta * (b + (h @ W32).astype(np.float64))
        if gaussian:
            x = mean + rng.standard_normal((n_runs, V))
        else:
            x = (rng.random((n_runs, V)) < sigmoid(mean)).astype(np.float64)
        a = pre(x)
        hid_prev = softplus(beta * a).sum(axis=1)
    m = float(np.max(log_w))
    w = np.exp(log_w - m)
    mean_w = float(np.mean(w))
    log_z = log_z_a + m + math.log(mean_w)
    stderr = float(np.std(w, ddof=1) / (math.sqrt(n_runs) * mean_w))
    return AISEstimate(log_z, stderr)


def ais_log_likelihood(
    x, W, b, c, n_runs: int = 100, betas=None, rng: np.random.Generator | None = None,
    base_visible_bias=None, visible_type="bernoulli",
) -> LogLikelihood:
    """Mean test log-likelihood ``mean(-F(x)) - log Z`` in nats per item, with ``log Z`` from
    :func:`ais_log_partition`.  The base model's visible biases default to the base rates of
    ``x`` itself (pass ``base_rate_visible_bias(train_data)`` to use the training set's).
    The error bar is the AIS standard error of ``log Z`` (the estimate's uncertainty; the
    spread of ``log p(x)`` over the items is not part of it)."""
    if base_visible_bias is None:
        base_visible_bias = base_rate_visible_bias(x, visible_type)
    est = ais_log_partition(W, b, c, n_runs=n_runs, betas=betas, rng=rng,
                            base_visible_bias=base_visible_bias, visible_type=visible_type)
    mean = float(np.mean(-free_energy(x, W, b, c, visible_type))) - est.log_z
    return LogLikelihood(mean, est.stderr)


# ------------------------------------------------------------------------------ sampling
def gibbs_sample(W, b, c, x, n_steps: int, rng: np.random.Generator | None = None,
                 visible_type="bernoulli") -> tuple[np.ndarray, np.ndarray]:
    """Run ``n_steps`` Gibbs sweeps (h ~ P(h|x), then x ~ P(x|h)) from the rows of ``x``.

    Returns ``(samples, means)``: the last visible states and the probabilities (Bernoulli)
    or means (Gaussian) they were drawn from -- the means are what one usually displays.
    """
    W, b, c = _params(W, b, c)
    kind = _visible_kind(visible_type)
    rng = np.random.default_rng() if rng is None else rng
    x = _data(x, b.size).copy()
    mean = x
    for _ in range(int(n_steps)):
        p_h = sigmoid(x @ W.T + c)
        h = (rng.random(p_h.shape) < p_h).astype(np.float64)
        mean = h @ W + b
        if kind == "gaussian":
            x = mean + rng.standard_normal(mean.shape)
        else:
            mean = sigmoid(mean)
            x = (rng.random(mean.shape) < mean).astype(np.float64)
    return x, mean

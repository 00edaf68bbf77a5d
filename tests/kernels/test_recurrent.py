"""Recurrent kernels against float64 NumPy references: the vectorised exp/sigmoid/tanh, each time
loop forward, and each backward as the derivative of the float64 forward along random
directions (random, odd and size-1 shapes).

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels; the last test does that).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from pycaffe_lite.kernels import recurrent as K
from tests.conftest import ROOT

SHAPES = {"random": (3, 2, 4), "odd": (5, 3, 7), "size1": (1, 1, 1)}  # (T, N, H)
EPS = 1e-6


def sig(a):
    return 0.5 * np.tanh(0.5 * a) + 0.5  # the logistic function without overflow


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def data(shape, seed, G, with_reset=True):
    T, N, H = shape
    rs = np.random.default_rng(seed)
    pre = f32(rs.uniform(-1.5, 1.5, (T, N, G)))
    cont = np.ones((T, N), np.float32)
    if with_reset:
        cont[0, 0] = 0
        cont[T // 2, N - 1] = 0
    W = f32(rs.uniform(-0.7, 0.7, (G, H)))
    return rs, pre, cont, W


def directional(loss, x, grad, rs):
    """d loss / dx along a random direction, by float64 central differences, vs <grad, v>."""
    v = rs.uniform(-1, 1, x.shape)
    numeric = (loss(x + EPS * v) - loss(x - EPS * v)) / (2 * EPS)
    np.testing.assert_allclose(np.sum(grad * v), numeric, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------- exp, sigmoid, tanh
@pytest.mark.parametrize("shape", [(1,), (7, 3), (2, 5, 9)])
def test_sigmoid_and_tanh_are_float32_accurate(shape):
    x = f32(np.random.default_rng(0).uniform(-12, 12, shape))
    s, t = x.copy(), x.copy()
    K.sigmoid_inplace(s)
    np.testing.assert_allclose(s, sig(x.astype(np.float64)), rtol=3e-7, atol=1e-7)
    K.tanh_inplace(t)
    np.testing.assert_allclose(t, np.tanh(x.astype(np.float64)), rtol=0, atol=2.5e-7)


def test_extremes_saturate_without_overflow():
    x = f32([-1e30, -200, -88, -20, -1e-30, 0, 1e-30, 20, 88, 200, 1e30])
    s, t = x.copy(), x.copy()
    K.sigmoid_inplace(s)
    K.tanh_inplace(t)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(t))
    np.testing.assert_allclose(s, sig(x.astype(np.float64)), atol=1e-7)
    np.testing.assert_allclose(t, np.tanh(x.astype(np.float64)), atol=1e-7)
    assert s[0] >= 0 and s[-1] == 1 and t[0] == -1 and t[-1] == 1


# ----------------------------------------------------------------------------- RNN
def rnn_ref(pre, cont, W, h0, sigmoid):
    h, out = h0, []
    for t in range(pre.shape[0]):
        a = pre[t] + (cont[t][:, None] * h) @ W.T
        h = sig(a) if sigmoid else np.tanh(a)
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("sigmoid", [False, True])
def test_rnn(case, sigmoid):
    T, N, H = SHAPES[case]
    rs, pre, cont, W = data(SHAPES[case], 1, H)
    h0 = f32(rs.uniform(-1, 1, (N, H)))
    h, hc = pre.copy(), np.empty((T, N, H), np.float32)
    K.rnn_forward(h, cont, W.T, h0, sigmoid, hc)
    expected = rnn_ref(pre.astype(np.float64), cont, W.astype(np.float64), h0.astype(np.float64), sigmoid)
    np.testing.assert_allclose(h, expected, rtol=1e-5, atol=1e-6)
    g, gT = rs.uniform(-1, 1, (T, N, H)), rs.uniform(-1, 1, (N, H))
    da, dh0 = f32(g), f32(gT)
    K.rnn_backward(h, cont, W, sigmoid, da, dh0)

    def loss_pre(p):
        out = rnn_ref(p, cont, W.astype(np.float64), h0.astype(np.float64), sigmoid)
        return np.sum(g * out) + np.sum(gT * out[-1])

    def loss_h0(s):
        out = rnn_ref(pre.astype(np.float64), cont, W.astype(np.float64), s, sigmoid)
        return np.sum(g * out) + np.sum(gT * out[-1])

    directional(loss_pre, pre.astype(np.float64), da, rs)
    directional(loss_h0, h0.astype(np.float64), dh0, rs)


# ----------------------------------------------------------------------------- LSTM
def lstm_ref(pre, cont, W, peep, state0):
    h, c = state0
    hs, cs = [], []
    H = h.shape[1]
    for t in range(pre.shape[0]):
        k = cont[t][:, None]
        a = pre[t] + (k * h) @ W.T
        cc = k * c
        i = sig(a[:, :H] + peep[0] * cc)
        f = sig(a[:, H:2 * H] + peep[1] * cc)
        g = np.tanh(a[:, 3 * H:])
        c = f * cc + i * g
        o = sig(a[:, 2 * H:3 * H] + peep[2] * c)
        h = o * np.tanh(c)
        hs.append(h)
        cs.append(c)
    return np.stack(hs), np.stack(cs)


@pytest.mark.parametrize("case", SHAPES)
def test_lstm(case):
    T, N, H = SHAPES[case]
    rs, pre, cont, W = data(SHAPES[case], 2, 4 * H)
    peep = f32(rs.uniform(-0.5, 0.5, (3, H)))
    state0 = f32(rs.uniform(-1, 1, (2, N, H)))
    act, c, h, hc = pre.copy(), *(np.empty((T, N, H), np.float32) for _ in range(3))
    K.lstm_forward(act, cont, W.T, peep, state0, c, h, hc)
    W64, peep64, s64, pre64 = (a.astype(np.float64) for a in (W, peep, state0, pre))
    eh, ec = lstm_ref(pre64, cont, W64, peep64, s64)
    np.testing.assert_allclose(h, eh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, ec, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hc[1:], cont[1:, :, None] * h[:-1])

    g, gT = rs.uniform(-1, 1, (T, N, H)), rs.uniform(-1, 1, (2, N, H))
    dstate, dgates, dpeep = f32(gT), np.empty((T, N, 4 * H), np.float32), np.zeros((3, H), np.float32)
    K.lstm_backward(act, c, state0, cont, W, peep, f32(g), dstate, dgates, dpeep)

    def loss(p=pre64, v=peep64, s=s64):
        hh, cc = lstm_ref(p, cont, W64, v, s)
        return np.sum(g * hh) + np.sum(gT[0] * hh[-1]) + np.sum(gT[1] * cc[-1])

    directional(lambda p: loss(p=p), pre64, dgates, rs)
    directional(lambda v: loss(v=v), peep64, dpeep, rs)
    directional(lambda s: loss(s=s), s64, dstate, rs)


@pytest.mark.parametrize("case", ["random", "size1"])
def test_lstm_unit(case):
    _, N, H = SHAPES[case]
    rs = np.random.default_rng(3)
    c_prev, x = f32(rs.uniform(-1, 1, (N, H))), f32(rs.uniform(-2, 2, (N, 4 * H)))
    cont = np.ones(N, np.float32)
    cont[0] = 0
    c, h, act = np.empty((N, H), np.float32), np.empty((N, H), np.float32), np.empty((N, 4 * H), np.float32)
    K.lstm_unit_forward(c_prev, x, cont, c, h, act)

    def ref(cp, xx):
        f = cont[:, None] * sig(xx[:, H:2 * H])
        cn = f * cp + sig(xx[:, :H]) * np.tanh(xx[:, 3 * H:])
        return cn, sig(xx[:, 2 * H:3 * H]) * np.tanh(cn)

    ec, eh = ref(c_prev.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(c, ec, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, eh, rtol=1e-5, atol=1e-6)
    gc, gh = rs.uniform(-1, 1, (N, H)), rs.uniform(-1, 1, (N, H))
    dc_prev, dx = np.empty((N, H), np.float32), np.empty((N, 4 * H), np.float32)
    K.lstm_unit_backward(c_prev, cont, act, c, f32(gc), f32(gh), dc_prev, dx)

    def loss(cp, xx):
        cn, hn = ref(cp, xx)
        return np.sum(gc * cn) + np.sum(gh * hn)

    directional(lambda cp: loss(cp, x.astype(np.float64)), c_prev.astype(np.float64), dc_prev, rs)
    directional(lambda xx: loss(c_prev.astype(np.float64), xx), x.astype(np.float64), dx, rs)


# ----------------------------------------------------------------------------- GRU
def gru_ref(pre, cont, W, h0):
    H = h0.shape[1]
    h, out = h0, []
    for t in range(pre.shape[0]):
        hp = cont[t][:, None] * h
        z = sig(pre[t][:, :H] + hp @ W[:H].T)
        r = sig(pre[t][:, H:2 * H] + hp @ W[H:2 * H].T)
        cand = np.tanh(pre[t][:, 2 * H:] + (r * hp) @ W[2 * H:].T)
        h = z * hp + (1 - z) * cand
        out.append(h)
    return np.stack(out)


@pytest.mark.parametrize("case", SHAPES)
def test_gru(case):
    T, N, H = SHAPES[case]
    rs, pre, cont, W = data(SHAPES[case], 4, 3 * H)
    h0 = f32(rs.uniform(-1, 1, (N, H)))
    act, h, hc, rh = pre.copy(), *(np.empty((T, N, H), np.float32) for _ in range(3))
    K.gru_forward(act, cont, W[:2 * H].T, W[2 * H:].T, h0, h, hc, rh)
    W64, pre64, h064 = W.astype(np.float64), pre.astype(np.float64), h0.astype(np.float64)
    np.testing.assert_allclose(h, gru_ref(pre64, cont, W64, h064), rtol=1e-5, atol=1e-6)
    g, gT = rs.uniform(-1, 1, (T, N, H)), rs.uniform(-1, 1, (N, H))
    dh0, dgates = f32(gT), np.empty((T, N, 3 * H), np.float32)
    K.gru_backward(act, hc, cont, W[:2 * H], W[2 * H:], f32(g), dh0, dgates)

    def loss(p=pre64, s=h064):
        out = gru_ref(p, cont, W64, s)
        return np.sum(g * out) + np.sum(gT * out[-1])

    directional(lambda p: loss(p=p), pre64, dgates, rs)
    directional(lambda s: loss(s=s), h064, dh0, rs)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without the JIT")
def test_same_tests_pass_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout

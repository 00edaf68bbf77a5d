"""Recurrent kernels against float64 NumPy references: the vectorised exp/sigmoid/tanh, each
step's forward, and each backward as the derivative of the float64 step along random directions
(random, odd and size-1 shapes).  Whole sequences are tested through the layers
(tests/layers/test_recurrent.py).

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels; the last test does that).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from pycaffe_lite.kernels import recurrent as K
from tests.conftest import ROOT

SHAPES = {"random": (2, 4), "odd": (3, 7), "size1": (1, 1)}  # (N, H)
EPS = 1e-6


def sig(a):
    return 0.5 * np.tanh(0.5 * a) + 0.5  # the logistic function without overflow


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


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
@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("sigmoid", [False, True])
def test_rnn_step(case, sigmoid):
    N, H = SHAPES[case]
    rs = np.random.default_rng(1)
    a, rec = f32(rs.uniform(-2, 2, (N, H))), f32(rs.uniform(-2, 2, (N, H)))
    cont = np.ones(N, np.float32)
    cont[0] = 0  # the first stream starts a sequence: no recurrent term
    h = a.copy()
    K.rnn_step_forward(h, rec, cont, sigmoid)

    def f(pre):
        return sig(pre) if sigmoid else np.tanh(pre)

    np.testing.assert_allclose(h, f(a.astype(np.float64) + cont[:, None] * rec), rtol=1e-6, atol=2e-7)
    rec = cont[:, None] * rec  # what the step added: the backward below differentiates through it
    g, dh_rec = rs.uniform(-1, 1, (N, H)), f32(rs.uniform(-1, 1, (N, H)))
    da = f32(g)
    K.rnn_step_backward(h, dh_rec, sigmoid, da)
    directional(lambda pre: np.sum((g + dh_rec) * f(pre + rec)), a.astype(np.float64), da, rs)


# ----------------------------------------------------------------------------- LSTM
def lstm_step_ref(a, c_prev, cont, peep):
    H = c_prev.shape[1]
    cc = cont[:, None] * c_prev
    i = sig(a[:, :H] + peep[0] * cc)
    f = sig(a[:, H:2 * H] + peep[1] * cc)
    g = np.tanh(a[:, 3 * H:])
    c = f * cc + i * g
    o = sig(a[:, 2 * H:3 * H] + peep[2] * c)
    return o * np.tanh(c), c


@pytest.mark.parametrize("case", SHAPES)
@pytest.mark.parametrize("peephole", [False, True])
def test_lstm_step(case, peephole):
    N, H = SHAPES[case]
    rs = np.random.default_rng(2)
    a, rec = f32(rs.uniform(-1.5, 1.5, (N, 4 * H))), f32(rs.uniform(-1, 1, (N, 4 * H)))
    c_prev = f32(rs.uniform(-1, 1, (N, H)))
    cont = np.ones(N, np.float32)
    cont[0] = 0
    peep = f32(rs.uniform(-0.5, 0.5, (3, H)) if peephole else np.zeros((3, H)))
    act, c, h = a.copy(), np.empty((N, H), np.float32), np.empty((N, H), np.float32)
    K.lstm_step_forward(act, rec, c_prev, cont, peep, c, h)
    pre64, cp64, peep64 = a.astype(np.float64) + cont[:, None] * rec, c_prev.astype(np.float64), peep.astype(np.float64)
    eh, ec = lstm_step_ref(pre64, cp64, cont, peep64)
    np.testing.assert_allclose(h, eh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, ec, rtol=1e-5, atol=1e-6)

    top, dh_rec, dc_next = (rs.uniform(-1, 1, (N, H)) for _ in range(3))
    dstate = f32(np.stack([dh_rec, dc_next]))
    dgates, dpeep = np.empty((N, 4 * H), np.float32), np.zeros((3, H), np.float32)
    K.lstm_step_backward(act, c, c_prev, cont, peep, f32(top), dstate, dgates, dpeep)
    np.testing.assert_allclose(dstate[0], f32(top) + f32(dh_rec), rtol=1e-6)

    def loss(p=pre64, cp=cp64, v=peep64):
        hh, cc = lstm_step_ref(p, cp, cont, v)
        return np.sum((top + dh_rec) * hh) + np.sum(dc_next * cc)

    directional(lambda p: loss(p=p), pre64, dgates, rs)
    directional(lambda cp: loss(cp=cp), cp64, dstate[1], rs)
    directional(lambda v: loss(v=v), peep64, dpeep, rs)


@pytest.mark.parametrize("case", ["random", "size1"])
def test_lstm_unit(case):
    N, H = SHAPES[case]
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
def gru_step_ref(a, hp, W):
    H = hp.shape[1]
    z = sig(a[:, :H] + hp @ W[:H].T)
    r = sig(a[:, H:2 * H] + hp @ W[H:2 * H].T)
    cand = np.tanh(a[:, 2 * H:] + (r * hp) @ W[2 * H:].T)
    return z * hp + (1 - z) * cand


@pytest.mark.parametrize("case", SHAPES)
def test_gru_step(case):
    """The three GRU kernels and their two products, as the layer runs them for one step."""
    N, H = SHAPES[case]
    rs = np.random.default_rng(4)
    a, W = f32(rs.uniform(-1.5, 1.5, (N, 3 * H))), f32(rs.uniform(-0.7, 0.7, (3 * H, H)))
    h_prev = f32(rs.uniform(-1, 1, (N, H)))
    cont = np.ones(N, np.float32)
    cont[-1] = 0
    hp = f32(cont[:, None] * h_prev)
    act, rec_zr, rec_c = a.copy(), np.empty((N, 2 * H), np.float32), np.empty((N, H), np.float32)
    rh, h = np.empty((N, H), np.float32), np.empty((N, H), np.float32)
    np.matmul(hp, W[:2 * H].T, out=rec_zr)
    K.gru_step_gates(act, rec_zr, hp, rh)
    np.matmul(rh, W[2 * H:].T, out=rec_c)
    K.gru_step_output(act, rec_c, hp, h)
    a64, W64 = a.astype(np.float64), W.astype(np.float64)
    np.testing.assert_allclose(h, gru_step_ref(a64, hp.astype(np.float64), W64), rtol=1e-5, atol=1e-6)

    top, dh_rec = rs.uniform(-1, 1, (N, H)), rs.uniform(-1, 1, (N, H))
    dh = f32(dh_rec)
    dzr, dgates = np.empty((N, 2 * H), np.float32), np.empty((N, 3 * H), np.float32)
    dac, dhp, drh, dhp_gates = (np.empty((N, H), np.float32) for _ in range(4))
    K.gru_step_backward_output(act, hp, f32(top), dh, dzr, dac, dhp)
    np.matmul(dac, W[2 * H:], out=drh)
    K.gru_step_backward_reset(act, hp, drh, dzr, dhp)
    np.matmul(dzr, W[:2 * H], out=dhp_gates)
    K.gru_step_backward_state(dzr, dac, dhp, dhp_gates, cont, dgates, dh)

    hprev64 = h_prev.astype(np.float64)

    def loss(p=a64, hprev=hprev64):
        return np.sum((top + dh_rec) * gru_step_ref(p, cont[:, None] * hprev, W64))

    directional(lambda p: loss(p=p), a64, dgates, rs)
    directional(lambda hh: loss(hprev=hh), hprev64, dh, rs)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without the JIT")
def test_same_tests_pass_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout

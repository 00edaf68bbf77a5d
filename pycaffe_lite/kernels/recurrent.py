"""Per-step kernels of the recurrent layers (RNN, LSTM, GRU) and the one-step LSTMUnit, float32.

The layers (pycaffe_lite/layers/recurrent.py) run the time loop: the input transform of all T
steps is one GEMM before it, and the weight gradients and dx one GEMM each after it; per step,
the recurrent product is one ``np.matmul`` (NumPy's BLAS) and the element-wise gate arithmetic
one of these kernels.  Measured at T = 28, N = 64, H = 128 (``benchmarks/recurrent.py --loop``),
that Python loop ran the LSTM forward in 2.30-3.03 ms against 2.42-3.20 ms for the whole loop
inside Numba calling ``np.dot`` (which goes to SciPy's BLAS and would make SciPy a
dependency), alternating runs; single-threaded BLAS 2.67 vs 2.91 ms.

Layout: time-major, as Caffe's sequence convention: one step is ``(N, ...)`` with gates in
blocks along the last axis (LSTM: i, f, o, g; GRU: z, r, c).  ``cont`` multiplies the previous
state (0 at the start of a sequence resets it).

Why a home-made ``exp``: Numba compiles ``np.exp``/``np.tanh`` on scalars to libm calls that
LLVM cannot vectorise (~1.7 ns and more per value, measured); a polynomial ``exp`` (Cephes'
``expf`` range reduction and coefficients, <= 2 ulp) inlines into the loops and vectorises
(~0.2 ns per value).  Kernels compile with ``error_model="numpy"``: Python's ZeroDivisionError
check on every float division would otherwise stop vectorisation (3.7 vs 0.24 ns per sigmoid).
Each inner loop writes one array and reads few: a loop writing several (a fused cell) needs
more run-time alias checks than LLVM allows and stays scalar (246 vs 15 us per LSTM step).
tanh(x) = 2 sigmoid(2x) - 1 is the formula Caffe's LSTMUnit uses.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_ONE = np.float32(1.0)
_TWO = np.float32(2.0)
_HALF = np.float32(0.5)
_ZERO = np.float32(0.0)
# exp range reduction: x = n ln2 + r, ln2 split in two parts so n * _LN2_HI is exact.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_HI = np.float32(88.0)   # exp(88) < FLT_MAX
_EXP_LO = np.float32(-87.0)  # exp(-87) > FLT_MIN (no denormals from the bit trick)
_P0 = np.float32(1.9875691500e-4)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)

# nogil: the layers run the time loops of two halves of the batch on two threads (the kernels
# touch only the arrays they are given, so they need no GIL).
_KERNEL = {"cache": True, "error_model": "numpy", "nogil": True}


@njit(inline="always", error_model="numpy")
def _exp(x):
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI - n * _LN2_LO
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
    # 2^n built in the exponent bits of a float32
    return p * np.int32((np.int32(n) + 127) << 23).view(np.float32)


@njit(inline="always", error_model="numpy")
def _sigmoid(x):
    return _ONE / (_ONE + _exp(-x))


@njit(inline="always", error_model="numpy")
def _tanh(x):
    return _TWO / (_ONE + _exp(-_TWO * x)) - _ONE


@njit(**_KERNEL)
def tanh_inplace(io_x):
    """io_x = tanh(io_x) element-wise (C-contiguous).  One array argument on purpose: LLVM's
    vectorised loop is guarded by a run-time overlap check, which fails when an input and an
    output are the same memory (3.7 vs 0.25 ns per value)."""
    xf = io_x.reshape(-1)
    for j in range(xf.size):
        xf[j] = _tanh(xf[j])


@njit(**_KERNEL)
def sigmoid_inplace(io_x):
    """io_x = sigmoid(io_x) element-wise (C-contiguous)."""
    xf = io_x.reshape(-1)
    for j in range(xf.size):
        xf[j] = _sigmoid(xf[j])


# ----------------------------------------------------------------------------- RNN
@njit(**_KERNEL)
def rnn_step_forward(io_a, rec, cont_t, sigmoid):
    """One RNN step: io_a (N, H) on entry W_xh x_t + b_h (+ static term), on exit
    h_t = f(io_a + cont_t rec), rec = W_hh h_{t-1}, cont_t (N,); f = tanh, or the sigmoid.
    (cont_t scales the product rather than h_{t-1}: one call per step fewer for the layer.)"""
    for n in range(io_a.shape[0]):
        a = io_a[n]
        r = rec[n]
        k = cont_t[n]
        if sigmoid:
            for d in range(a.shape[0]):
                a[d] = _sigmoid(a[d] + k * r[d])
        else:
            for d in range(a.shape[0]):
                a[d] = _tanh(a[d] + k * r[d])


@njit(**_KERNEL)
def rnn_step_backward(h, dh_rec, sigmoid, io_da):
    """io_da (N, H): on entry dL/dh_t from outside the recurrence, on exit
    dL/da_t = (io_da + dh_rec) f'(a_t), written with f'(a) = 1 - h^2 (tanh) or h (1 - h)."""
    for n in range(h.shape[0]):
        hn = h[n]
        dr = dh_rec[n]
        da = io_da[n]
        if sigmoid:
            for d in range(hn.shape[0]):
                da[d] = (da[d] + dr[d]) * hn[d] * (_ONE - hn[d])
        else:
            for d in range(hn.shape[0]):
                da[d] = (da[d] + dr[d]) * (_ONE - hn[d] * hn[d])


# ----------------------------------------------------------------------------- LSTM
@njit(inline="always", error_model="numpy")
def _lstm_cell(a, cc_io, vi, vf, vo, out_h):
    """One row of the LSTM cell.  a (4H,): gate pre-activations, overwritten by i, f, o, g;
    cc_io (H,): on entry cc = cont c_{t-1}, on exit c_t; out_h (H,): h_t."""
    H = out_h.shape[0]
    ai = a[:H]
    af = a[H:2 * H]
    ao = a[2 * H:3 * H]
    ag = a[3 * H:]
    for d in range(H):
        ai[d] = _sigmoid(ai[d] + vi[d] * cc_io[d])
    for d in range(H):
        af[d] = _sigmoid(af[d] + vf[d] * cc_io[d])
    for d in range(H):
        ag[d] = _tanh(ag[d])
    for d in range(H):
        cc_io[d] = af[d] * cc_io[d] + ai[d] * ag[d]
    for d in range(H):
        ao[d] = _sigmoid(ao[d] + vo[d] * cc_io[d])
    for d in range(H):
        out_h[d] = ao[d] * _tanh(cc_io[d])


@njit(**_KERNEL)
def lstm_step_forward(io_a, rec, c_prev, cont_t, peep, out_c, out_h):
    """One step of Caffe's LSTM (plus optional diagonal peepholes).

    io_a (N, 4H): on entry the input part of the gate pre-activations (W_xc x_t + b_c + static
    term), blocks i, f, o, g; on exit the activations i, f, o (sigmoid), g (tanh).
    rec (N, 4H) = W_hc h_{t-1}; c_prev (N, H); cont_t (N,); peep (3, H): V_i, V_f, V_o (zeros
    for Caffe's LSTM).  With a = io_a + cont_t rec (= W_hc (cont_t h_{t-1}): cont_t scales the
    product rather than h_{t-1}, one call per step fewer for the layer) and cc = cont_t c_{t-1}:
        i = s(a_i + V_i cc), f = s(a_f + V_f cc), g = tanh(a_g),
        c_t = f cc + i g,  o = s(a_o + V_o c_t),  h_t = o tanh(c_t)   -> out_c, out_h (N, H).
    """
    N, G = io_a.shape
    for n in range(N):
        a = io_a[n]
        r = rec[n]
        k = cont_t[n]
        for j in range(G):
            a[j] += k * r[j]
        cp = c_prev[n]
        cn = out_c[n]
        for d in range(cn.shape[0]):
            cn[d] = k * cp[d]
        _lstm_cell(a, cn, peep[0], peep[1], peep[2], out_h[n])


@njit(**_KERNEL)
def lstm_step_backward(act, c, c_prev, cont_t, peep, top_diff, io_dstate, out_dgates, out_dpeep):
    """Backward of :func:`lstm_step_forward` for one step.

    act (N, 4H) and c (N, H): the step's activations and cell; top_diff (N, H): dL/dh_t from
    above.  io_dstate (2, N, H): on entry dL/dh_t through the recurrence (without top_diff) and
    dL/dc_t from step t + 1; on exit dL/dh_t in total (the caller turns it into dL/dh_{t-1}
    with W_hc) and dL/dc_{t-1}.  out_dgates (N, 4H): dL/d(pre-activation), blocks i, f, o, g.
    out_dpeep (3, H): dL/dV_i, dV_f, dV_o are added to it.
    """
    N, G = act.shape
    H = G // 4
    vi = peep[0]
    vf = peep[1]
    vo = peep[2]
    dvi = out_dpeep[0]
    dvf = out_dpeep[1]
    dvo = out_dpeep[2]
    for n in range(N):
        a = act[n]
        ai = a[:H]
        af = a[H:2 * H]
        ao = a[2 * H:3 * H]
        ag = a[3 * H:]
        dg = out_dgates[n]
        di = dg[:H]
        df = dg[H:2 * H]
        do = dg[2 * H:3 * H]
        dgg = dg[3 * H:]
        cn = c[n]
        cp = c_prev[n]
        dh = io_dstate[0, n]
        dc = io_dstate[1, n]
        dt = top_diff[n]
        k = cont_t[n]      # cc = cont_t c_{t-1} = k * cp[d]
        for d in range(H):
            dgg[d] = _tanh(cn[d])   # tanh(c_t), until replaced by the g gate's diff
        for d in range(H):
            dh[d] += dt[d]
        for d in range(H):
            do[d] = dh[d] * dgg[d] * ao[d] * (_ONE - ao[d])
        for d in range(H):
            dc[d] += dh[d] * ao[d] * (_ONE - dgg[d] * dgg[d]) + do[d] * vo[d]
        for d in range(H):
            di[d] = dc[d] * ag[d] * ai[d] * (_ONE - ai[d])
        for d in range(H):
            df[d] = dc[d] * (k * cp[d]) * af[d] * (_ONE - af[d])
        for d in range(H):
            dgg[d] = dc[d] * ai[d] * (_ONE - ag[d] * ag[d])
        for d in range(H):
            dvi[d] += di[d] * (k * cp[d])
        for d in range(H):
            dvf[d] += df[d] * (k * cp[d])
        for d in range(H):
            dvo[d] += do[d] * cn[d]
        for d in range(H):  # dL/dc_{t-1} = cont_t dL/dcc
            dc[d] = k * (dc[d] * af[d] + di[d] * vi[d] + df[d] * vf[d])


# ----------------------------------------------------------------------------- LSTMUnit
@njit(**_KERNEL)
def lstm_unit_forward(c_prev, x, cont, out_c, out_h, out_act):
    """One LSTM step as Caffe's LSTMUnit: c_prev (N, H), x (N, 4H) pre-activations (i, f, o, g),
    cont (N,).  f = cont * s(x_f); c = f c_prev + i g; h = o tanh(c).  out_act (N, 4H) keeps
    i, s(x_f), o, g for the backward."""
    N, H = c_prev.shape
    no_peep = np.zeros(H, np.float32)
    for n in range(N):
        xn = x[n]
        an = out_act[n]
        cn = out_c[n]
        cp = c_prev[n]
        k = cont[n]
        for j in range(4 * H):
            an[j] = xn[j]
        for d in range(H):
            cn[d] = k * cp[d]
        _lstm_cell(an, cn, no_peep, no_peep, no_peep, out_h[n])


@njit(**_KERNEL)
def lstm_unit_backward(c_prev, cont, act, c, dc, dh, out_dc_prev, out_dx):
    """Backward of :func:`lstm_unit_forward`: dc, dh (N, H) the top diffs; out_dc_prev (N, H),
    out_dx (N, 4H) the bottom diffs (either may be a scratch buffer when not needed)."""
    N, H = c_prev.shape
    dct = np.empty(H, np.float32)
    for n in range(N):
        a = act[n]
        ai = a[:H]
        af = a[H:2 * H]
        ao = a[2 * H:3 * H]
        ag = a[3 * H:]
        dx = out_dx[n]
        di = dx[:H]
        df = dx[H:2 * H]
        do = dx[2 * H:3 * H]
        dg = dx[3 * H:]
        cn = c[n]
        cp = c_prev[n]
        dcn = dc[n]
        dhn = dh[n]
        dcp = out_dc_prev[n]
        k = cont[n]
        for d in range(H):
            do[d] = _tanh(cn[d])   # tanh(c), until replaced by the o gate's diff
        for d in range(H):
            dct[d] = dcn[d] + dhn[d] * ao[d] * (_ONE - do[d] * do[d])
        for d in range(H):
            do[d] = dhn[d] * do[d] * ao[d] * (_ONE - ao[d])
        for d in range(H):
            dcp[d] = dct[d] * k * af[d]
        for d in range(H):
            di[d] = dct[d] * ag[d] * ai[d] * (_ONE - ai[d])
        for d in range(H):
            df[d] = dct[d] * k * cp[d] * af[d] * (_ONE - af[d])
        for d in range(H):
            dg[d] = dct[d] * ai[d] * (_ONE - ag[d] * ag[d])


# ----------------------------------------------------------------------------- GRU
@njit(**_KERNEL)
def gru_step_gates(io_a, rec_zr, hp, out_rh):
    """GRU step (Cho et al. 2014), part 1.  io_a (N, 3H): blocks z, r, c of the input part of
    the pre-activations (W_x x_t + b + static term); z and r become s(a + rec_zr), rec_zr (N, 2H)
    = U_{z,r} hp, hp = cont_t h_{t-1} (N, H).  out_rh (N, H) = r * hp."""
    N, G = io_a.shape
    H = G // 3
    for n in range(N):
        azr = io_a[n, :2 * H]
        ar = io_a[n, H:2 * H]
        r_ = rec_zr[n]
        hpn = hp[n]
        rh = out_rh[n]
        for j in range(2 * H):
            azr[j] = _sigmoid(azr[j] + r_[j])
        for d in range(H):
            rh[d] = ar[d] * hpn[d]


@njit(**_KERNEL)
def gru_step_output(io_a, rec_c, hp, out_h):
    """GRU step, part 2: the candidate h~ = tanh(a_c + rec_c) (rec_c (N, H) = U (r * hp))
    replaces block c of io_a; out_h = z hp + (1 - z) h~."""
    N, G = io_a.shape
    H = G // 3
    for n in range(N):
        az = io_a[n, :H]
        ac = io_a[n, 2 * H:]
        rc = rec_c[n]
        hpn = hp[n]
        hn = out_h[n]
        for d in range(H):
            ac[d] = _tanh(ac[d] + rc[d])
        for d in range(H):
            hn[d] = az[d] * hpn[d] + (_ONE - az[d]) * ac[d]


@njit(**_KERNEL)
def gru_step_backward_output(act, hp, top_diff, io_dh, out_dzr, out_dac, out_dhp):
    """GRU backward, part 1 (through h_t = z hp + (1 - z) h~).  io_dh (N, H): on entry dL/dh_t
    through the recurrence, on exit plus top_diff.  out_dzr[:, :H] = dL/da_z; out_dac (N, H) =
    dL/da_c; out_dhp = dL/dh_t z (hp's direct share)."""
    N, G = act.shape
    H = G // 3
    for n in range(N):
        az = act[n, :H]
        ac = act[n, 2 * H:]
        hpn = hp[n]
        dt = top_diff[n]
        dh = io_dh[n]
        dz = out_dzr[n, :H]
        dcn = out_dac[n]
        dpn = out_dhp[n]
        for d in range(H):
            dh[d] += dt[d]
        for d in range(H):
            dz[d] = dh[d] * (hpn[d] - ac[d]) * az[d] * (_ONE - az[d])
        for d in range(H):
            dcn[d] = dh[d] * (_ONE - az[d]) * (_ONE - ac[d] * ac[d])
        for d in range(H):
            dpn[d] = dh[d] * az[d]


@njit(**_KERNEL)
def gru_step_backward_reset(act, hp, drh, io_dzr, io_dhp):
    """GRU backward, part 2 (through r * hp): drh (N, H) = U^T dL/da_c = dL/d(r * hp);
    io_dzr[:, H:] = dL/da_r; io_dhp += drh r."""
    N, G = act.shape
    H = G // 3
    for n in range(N):
        ar = act[n, H:2 * H]
        hpn = hp[n]
        drn = drh[n]
        dr = io_dzr[n, H:]
        dpn = io_dhp[n]
        for d in range(H):
            dr[d] = drn[d] * hpn[d] * ar[d] * (_ONE - ar[d])
        for d in range(H):
            dpn[d] += drn[d] * ar[d]


@njit(**_KERNEL)
def gru_step_backward_state(dzr, dac, dhp, dhp_gates, cont_t, out_dgates, out_dh):
    """GRU backward, part 3: out_dgates (N, 3H) = [dzr, dac]; out_dh = dL/dh_{t-1}
    = cont_t (dhp + dhp_gates), dhp_gates (N, H) = U_{z,r}^T dL/da_{z,r}."""
    N, H = dac.shape
    for n in range(N):
        dg = out_dgates[n]
        dzn = dzr[n]
        dcn = dac[n]
        for j in range(2 * H):
            dg[j] = dzn[j]
        for d in range(H):
            dg[2 * H + d] = dcn[d]
        k = cont_t[n]
        dpn = dhp[n]
        dgn = dhp_gates[n]
        dh = out_dh[n]
        for d in range(H):
            dh[d] = k * (dpn[d] + dgn[d])

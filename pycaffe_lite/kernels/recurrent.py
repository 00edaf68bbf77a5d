"""Time loops of the recurrent layers (RNN, LSTM, GRU) and the one-step LSTMUnit, float32.

The layers do the large products once for the whole sequence with one BLAS call each (the
input transform ``x W_x^T + b`` before the loop; the weight gradients and ``dx`` after it); the
kernels here run the time loop: per step one recurrent product (``np.dot`` inside Numba, which
calls BLAS) and the element-wise gate arithmetic.

Layout: time-major, as Caffe's sequence convention: ``(T, N, ...)`` with gates in blocks along
the last axis (LSTM: i, f, o, g; GRU: z, r, c).  ``cont`` ``(T, N)`` multiplies the previous
state (0 at the start of a sequence resets it).  States at t = -1 come from ``state0``.

Why a home-made ``exp``: Numba compiles ``np.exp``/``np.tanh`` on scalars to libm calls that
LLVM cannot vectorise (~1.7 ns and more per value, measured); a polynomial ``exp`` (Cephes'
``expf`` range reduction and coefficients, <= 2 ulp) inlines into the loops and vectorises
(~0.2 ns per value), so the gate arithmetic costs far less than the recurrent GEMM.  Kernels
compile with ``error_model="numpy"``: Python's ZeroDivisionError check on every float division
would otherwise stop vectorisation (3.7 vs 0.24 ns per sigmoid).  tanh(x) = 2 sigmoid(2x) - 1
is the formula Caffe's LSTMUnit uses.
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

_KERNEL = {"cache": True, "error_model": "numpy"}


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


@njit(inline="always", error_model="numpy")
def _gate_state(prev, cont_t, out):
    """out[n] = cont_t[n] * prev[n]: the previous state, zeroed where a sequence starts."""
    for n in range(out.shape[0]):
        k = cont_t[n]
        p = prev[n]
        o = out[n]
        for d in range(o.shape[0]):
            o[d] = k * p[d]


# ----------------------------------------------------------------------------- RNN
@njit(**_KERNEL)
def rnn_forward(io_h, cont, w_hh_t, h0, sigmoid, out_hc):
    """h_t = f(a_t + W_hh (cont_t h_{t-1})), f = tanh (or sigmoid).

    io_h (T, N, H): on entry a_t = W_xh x_t + b_h (+ static term), on exit h_t.
    cont (T, N); w_hh_t (H, H) = W_hh^T; h0 (N, H) the state before t = 0.
    out_hc (T, N, H): cont_t h_{t-1}, kept for the weight gradient.
    """
    T, N, H = io_h.shape
    rec = np.empty((N, H), np.float32)
    for t in range(T):
        _gate_state(h0 if t == 0 else io_h[t - 1], cont[t], out_hc[t])
        np.dot(out_hc[t], w_hh_t, rec)
        for n in range(N):
            hn = io_h[t, n]
            rn = rec[n]
            if sigmoid:
                for d in range(H):
                    hn[d] = _sigmoid(hn[d] + rn[d])
            else:
                for d in range(H):
                    hn[d] = _tanh(hn[d] + rn[d])


@njit(**_KERNEL)
def rnn_backward(h, cont, w_hh, sigmoid, io_dh, io_dh0):
    """Backward through time of :func:`rnn_forward`.

    io_dh (T, N, H): on entry dL/dh_t from outside the recurrence (the output path), on exit
    dL/da_t (the pre-activation diffs).  io_dh0 (N, H): on entry dL/dh_{T-1} from outside
    (an exposed final state, else zeros), on exit dL/dh0.
    """
    T, N, H = h.shape
    carry = np.empty((N, H), np.float32)   # dL/dh_{t} through the recurrence
    dhc = np.empty((N, H), np.float32)
    carry[:] = io_dh0
    for t in range(T - 1, -1, -1):
        for n in range(N):
            hn = h[t, n]
            dn = io_dh[t, n]
            cn = carry[n]
            if sigmoid:
                for d in range(H):
                    dn[d] = (dn[d] + cn[d]) * hn[d] * (_ONE - hn[d])
            else:
                for d in range(H):
                    dn[d] = (dn[d] + cn[d]) * (_ONE - hn[d] * hn[d])
        np.dot(io_dh[t], w_hh, dhc)
        _gate_state(dhc, cont[t], carry)
    io_dh0[:] = carry


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
def lstm_forward(io_act, cont, w_hc_t, peep, state0, out_c, out_h, out_hc):
    """Caffe's LSTM (plus optional diagonal peepholes), all T steps.

    io_act (T, N, 4H): on entry the input part of the gate pre-activations (W_xc x_t + b_c +
    static term), blocks i, f, o, g; on exit the activations i, f, o (sigmoid), g (tanh).
    peep (3, H): V_i, V_f, V_o (zeros for Caffe's LSTM).  state0 (2, N, H): h and c before t=0.
    With hc = cont_t h_{t-1}, cc = cont_t c_{t-1}, a = io_act[t] + W_hc hc:
        i = s(a_i + V_i cc), f = s(a_f + V_f cc), g = tanh(a_g),
        c_t = f cc + i g,  o = s(a_o + V_o c_t),  h_t = o tanh(c_t).
    out_c, out_h, out_hc (T, N, H): c_t, h_t and hc.

    Each inner loop writes one array: a loop writing several (the fused cell) defeats LLVM's
    vectoriser (more runtime alias checks than it allows) and ran 16x slower.
    """
    T, N, G = io_act.shape
    rec = np.empty((N, G), np.float32)
    for t in range(T):
        _gate_state(state0[0] if t == 0 else out_h[t - 1], cont[t], out_hc[t])
        _gate_state(state0[1] if t == 0 else out_c[t - 1], cont[t], out_c[t])
        np.dot(out_hc[t], w_hc_t, rec)
        for n in range(N):
            a = io_act[t, n]
            r = rec[n]
            for j in range(G):
                a[j] += r[j]
            _lstm_cell(a, out_c[t, n], peep[0], peep[1], peep[2], out_h[t, n])


@njit(**_KERNEL)
def lstm_backward(act, c, state0, cont, w_hc, peep, top_diff, io_dstate, out_dgates, out_dpeep):
    """Backward through time of :func:`lstm_forward`.

    act, c: the forward's activations and cells; w_hc (4H, H); top_diff (T, N, H) dL/dh_t from
    above.  io_dstate (2, N, H): on entry dL/dh_{T-1}, dL/dc_{T-1} from outside (exposed final
    states, else zeros); on exit dL/dh0, dL/dc0.  out_dgates (T, N, 4H): dL/d(pre-activation),
    blocks i, f, o, g.  out_dpeep (3, H): dL/dV_i, dV_f, dV_o are added to it.
    """
    T, N, G = act.shape
    H = G // 4
    dh = io_dstate[0]    # dL/dh_t: the recurrent part, then plus the top diff
    dc = io_dstate[1]    # dL/dc_t from step t + 1, then the total
    dhc = np.empty((N, H), np.float32)
    cc = np.empty((N, H), np.float32)
    tc = np.empty((N, H), np.float32)
    vi = peep[0]
    vf = peep[1]
    vo = peep[2]
    dvi = out_dpeep[0]
    dvf = out_dpeep[1]
    dvo = out_dpeep[2]
    for t in range(T - 1, -1, -1):
        _gate_state(state0[1] if t == 0 else c[t - 1], cont[t], cc)
        for n in range(N):
            a = act[t, n]
            ai = a[:H]
            af = a[H:2 * H]
            ao = a[2 * H:3 * H]
            ag = a[3 * H:]
            dg = out_dgates[t, n]
            di = dg[:H]
            df = dg[H:2 * H]
            do = dg[2 * H:3 * H]
            dgg = dg[3 * H:]
            cn = c[t, n]
            ccn = cc[n]
            tcn = tc[n]
            dhn = dh[n]
            dcn = dc[n]
            dt = top_diff[t, n]
            k = cont[t, n]
            for d in range(H):
                tcn[d] = _tanh(cn[d])
            for d in range(H):
                dhn[d] += dt[d]
            for d in range(H):
                do[d] = dhn[d] * tcn[d] * ao[d] * (_ONE - ao[d])
            for d in range(H):
                dcn[d] += dhn[d] * ao[d] * (_ONE - tcn[d] * tcn[d]) + do[d] * vo[d]
            for d in range(H):
                di[d] = dcn[d] * ag[d] * ai[d] * (_ONE - ai[d])
            for d in range(H):
                df[d] = dcn[d] * ccn[d] * af[d] * (_ONE - af[d])
            for d in range(H):
                dgg[d] = dcn[d] * ai[d] * (_ONE - ag[d] * ag[d])
            for d in range(H):
                dvi[d] += di[d] * ccn[d]
            for d in range(H):
                dvf[d] += df[d] * ccn[d]
            for d in range(H):
                dvo[d] += do[d] * cn[d]
            for d in range(H):  # dL/dc_{t-1} = cont_t dL/dcc
                dcn[d] = k * (dcn[d] * af[d] + di[d] * vi[d] + df[d] * vf[d])
        np.dot(out_dgates[t], w_hc, dhc)
        _gate_state(dhc, cont[t], dh)


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
def gru_forward(io_act, cont, w_zr_t, w_c_t, h0, out_h, out_hc, out_rh):
    """GRU (Cho et al. 2014), all T steps.

    io_act (T, N, 3H): on entry the input part of the pre-activations (W_x x_t + b + static
    term), blocks z, r, c; on exit the activations z, r and the candidate h~.
    w_zr_t (H, 2H) = U_{z,r}^T; w_c_t (H, H) = U^T; h0 (N, H) the state before t = 0.
    With hp = cont_t h_{t-1}:  z = s(a_z + U_z hp), r = s(a_r + U_r hp),
    h~ = tanh(a_c + U (r * hp)),  h_t = z hp + (1 - z) h~.
    out_h, out_hc (hp), out_rh (r * hp): (T, N, H).
    """
    T, N, G = io_act.shape
    H = G // 3
    rec_zr = np.empty((N, 2 * H), np.float32)
    rec_c = np.empty((N, H), np.float32)
    for t in range(T):
        _gate_state(h0 if t == 0 else out_h[t - 1], cont[t], out_hc[t])
        np.dot(out_hc[t], w_zr_t, rec_zr)
        for n in range(N):
            azr = io_act[t, n, :2 * H]
            ar = io_act[t, n, H:2 * H]
            r_ = rec_zr[n]
            hp = out_hc[t, n]
            rh = out_rh[t, n]
            for j in range(2 * H):
                azr[j] = _sigmoid(azr[j] + r_[j])
            for d in range(H):
                rh[d] = ar[d] * hp[d]
        np.dot(out_rh[t], w_c_t, rec_c)
        for n in range(N):
            az = io_act[t, n, :H]
            ac = io_act[t, n, 2 * H:]
            rc = rec_c[n]
            hp = out_hc[t, n]
            hn = out_h[t, n]
            for d in range(H):
                ac[d] = _tanh(ac[d] + rc[d])
            for d in range(H):
                hn[d] = az[d] * hp[d] + (_ONE - az[d]) * ac[d]


@njit(**_KERNEL)
def gru_backward(act, hc, cont, w_zr, w_c, top_diff, io_dh0, out_dgates):
    """Backward through time of :func:`gru_forward`.

    w_zr (2H, H) = U_{z,r}; w_c (H, H) = U.  top_diff (T, N, H) dL/dh_t from above.
    io_dh0 (N, H): on entry dL/dh_{T-1} from outside (exposed final state, else zeros), on exit
    dL/dh0.  out_dgates (T, N, 3H): dL/d(pre-activations), blocks z, r, c.
    """
    T, N, G = act.shape
    H = G // 3
    dh = io_dh0          # dL/dh_t: the recurrent part, then plus the top diff
    drh = np.empty((N, H), np.float32)
    dzr = np.empty((N, 2 * H), np.float32)
    dhp = np.empty((N, H), np.float32)
    dac = np.empty((N, H), np.float32)
    for t in range(T - 1, -1, -1):
        for n in range(N):
            az = act[t, n, :H]
            ac = act[t, n, 2 * H:]
            hp = hc[t, n]
            dt = top_diff[t, n]
            dhn = dh[n]
            dz = dzr[n, :H]
            dcn = dac[n]
            dpn = dhp[n]
            for d in range(H):
                dhn[d] += dt[d]
            for d in range(H):
                dz[d] = dhn[d] * (hp[d] - ac[d]) * az[d] * (_ONE - az[d])
            for d in range(H):
                dcn[d] = dhn[d] * (_ONE - az[d]) * (_ONE - ac[d] * ac[d])
            for d in range(H):
                dpn[d] = dhn[d] * az[d]
        np.dot(dac, w_c, drh)   # dL/d(r * hp)
        for n in range(N):
            ar = act[t, n, H:2 * H]
            hp = hc[t, n]
            dr = dzr[n, H:]
            drn = drh[n]
            dpn = dhp[n]
            for d in range(H):
                dr[d] = drn[d] * hp[d] * ar[d] * (_ONE - ar[d])
            for d in range(H):
                dpn[d] += drn[d] * ar[d]
        np.dot(dzr, w_zr, drh)  # drh reused: the z, r gates' share of dL/dhp
        for n in range(N):
            dg = out_dgates[t, n]
            dzn = dzr[n]
            dcn = dac[n]
            for j in range(2 * H):
                dg[j] = dzn[j]
            for d in range(H):
                dg[2 * H + d] = dcn[d]
        for n in range(N):
            dpn = dhp[n]
            drn = drh[n]
            dhn = dh[n]
            k = cont[t, n]
            for d in range(H):
                dhn[d] = k * (dpn[d] + drn[d])

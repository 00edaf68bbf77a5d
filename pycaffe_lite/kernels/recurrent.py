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
def tanh_forward(x, out):
    """out = tanh(x) element-wise; x and out are C-contiguous of the same shape (may alias)."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for j in range(xf.size):
        of[j] = _tanh(xf[j])


@njit(**_KERNEL)
def sigmoid_forward(x, out):
    """out = sigmoid(x) element-wise (the kernels' vectorised sigmoid, for tests and callers)."""
    xf = x.reshape(-1)
    of = out.reshape(-1)
    for j in range(xf.size):
        of[j] = _sigmoid(xf[j])


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
    """
    T, N, G = io_act.shape
    H = G // 4
    rec = np.empty((N, G), np.float32)
    vi = peep[0]
    vf = peep[1]
    vo = peep[2]
    for t in range(T):
        c_prev = state0[1] if t == 0 else out_c[t - 1]
        _gate_state(state0[0] if t == 0 else out_h[t - 1], cont[t], out_hc[t])
        np.dot(out_hc[t], w_hc_t, rec)
        for n in range(N):
            a = io_act[t, n]
            r = rec[n]
            cp = c_prev[n]
            cn = out_c[t, n]
            hn = out_h[t, n]
            k = cont[t, n]
            for d in range(H):
                cc = k * cp[d]
                i = _sigmoid(a[d] + r[d] + vi[d] * cc)
                f = _sigmoid(a[H + d] + r[H + d] + vf[d] * cc)
                g = _tanh(a[3 * H + d] + r[3 * H + d])
                c = f * cc + i * g
                o = _sigmoid(a[2 * H + d] + r[2 * H + d] + vo[d] * c)
                a[d] = i
                a[H + d] = f
                a[2 * H + d] = o
                a[3 * H + d] = g
                cn[d] = c
                hn[d] = o * _tanh(c)


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
    dh_rec = np.empty((N, H), np.float32)
    dc_next = np.empty((N, H), np.float32)
    dhc = np.empty((N, H), np.float32)
    dh_rec[:] = io_dstate[0]
    dc_next[:] = io_dstate[1]
    vi = peep[0]
    vf = peep[1]
    vo = peep[2]
    dvi = out_dpeep[0]
    dvf = out_dpeep[1]
    dvo = out_dpeep[2]
    for t in range(T - 1, -1, -1):
        c_prev = state0[1] if t == 0 else c[t - 1]
        for n in range(N):
            a = act[t, n]
            da = out_dgates[t, n]
            cn = c[t, n]
            cp = c_prev[n]
            dt = top_diff[t, n]
            dr = dh_rec[n]
            dcn = dc_next[n]
            k = cont[t, n]
            for d in range(H):
                i = a[d]
                f = a[H + d]
                o = a[2 * H + d]
                g = a[3 * H + d]
                cc = k * cp[d]
                tc = _tanh(cn[d])
                dh = dt[d] + dr[d]
                da_o = dh * tc * o * (_ONE - o)
                dc = dcn[d] + dh * o * (_ONE - tc * tc) + da_o * vo[d]
                da_i = dc * g * i * (_ONE - i)
                da_f = dc * cc * f * (_ONE - f)
                da[d] = da_i
                da[H + d] = da_f
                da[2 * H + d] = da_o
                da[3 * H + d] = dc * i * (_ONE - g * g)
                dvi[d] += da_i * cc
                dvf[d] += da_f * cc
                dvo[d] += da_o * cn[d]
                # dL/dc_{t-1} = cont_t * dL/dcc
                dcn[d] = k * (dc * f + da_i * vi[d] + da_f * vf[d])
        np.dot(out_dgates[t], w_hc, dhc)
        _gate_state(dhc, cont[t], dh_rec)
    io_dstate[0] = dh_rec
    io_dstate[1] = dc_next


# ----------------------------------------------------------------------------- LSTMUnit
@njit(**_KERNEL)
def lstm_unit_forward(c_prev, x, cont, out_c, out_h, out_act):
    """One LSTM step as Caffe's LSTMUnit: c_prev (N, H), x (N, 4H) pre-activations (i, f, o, g),
    cont (N,).  f = cont * s(x_f); c = f c_prev + i g; h = o tanh(c).  out_act (N, 4H) keeps
    i, s(x_f), o, g for the backward."""
    N, H = c_prev.shape
    for n in range(N):
        xn = x[n]
        an = out_act[n]
        k = cont[n]
        for d in range(H):
            i = _sigmoid(xn[d])
            f = _sigmoid(xn[H + d])
            o = _sigmoid(xn[2 * H + d])
            g = _tanh(xn[3 * H + d])
            c = (k * f) * c_prev[n, d] + i * g
            an[d] = i
            an[H + d] = f
            an[2 * H + d] = o
            an[3 * H + d] = g
            out_c[n, d] = c
            out_h[n, d] = o * _tanh(c)


@njit(**_KERNEL)
def lstm_unit_backward(c_prev, cont, act, c, dc, dh, out_dc_prev, out_dx):
    """Backward of :func:`lstm_unit_forward`: dc, dh (N, H) the top diffs; out_dc_prev (N, H),
    out_dx (N, 4H) the bottom diffs (either may be a scratch buffer when not needed)."""
    N, H = c_prev.shape
    for n in range(N):
        an = act[n]
        dx = out_dx[n]
        k = cont[n]
        for d in range(H):
            i = an[d]
            f = an[H + d]
            o = an[2 * H + d]
            g = an[3 * H + d]
            tc = _tanh(c[n, d])
            dct = dc[n, d] + dh[n, d] * o * (_ONE - tc * tc)
            out_dc_prev[n, d] = dct * k * f
            dx[d] = dct * g * i * (_ONE - i)
            dx[H + d] = dct * k * c_prev[n, d] * f * (_ONE - f)
            dx[2 * H + d] = dh[n, d] * tc * o * (_ONE - o)
            dx[3 * H + d] = dct * i * (_ONE - g * g)


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
            a = io_act[t, n]
            r_ = rec_zr[n]
            hp = out_hc[t, n]
            rh = out_rh[t, n]
            for d in range(H):
                z = _sigmoid(a[d] + r_[d])
                r = _sigmoid(a[H + d] + r_[H + d])
                a[d] = z
                a[H + d] = r
                rh[d] = r * hp[d]
        np.dot(out_rh[t], w_c_t, rec_c)
        for n in range(N):
            a = io_act[t, n]
            rc = rec_c[n]
            hp = out_hc[t, n]
            hn = out_h[t, n]
            for d in range(H):
                z = a[d]
                cand = _tanh(a[2 * H + d] + rc[d])
                a[2 * H + d] = cand
                hn[d] = z * hp[d] + (_ONE - z) * cand


@njit(**_KERNEL)
def gru_backward(act, hc, cont, w_zr, w_c, top_diff, io_dh0, out_dgates):
    """Backward through time of :func:`gru_forward`.

    w_zr (2H, H) = U_{z,r}; w_c (H, H) = U.  top_diff (T, N, H) dL/dh_t from above.
    io_dh0 (N, H): on entry dL/dh_{T-1} from outside (exposed final state, else zeros), on exit
    dL/dh0.  out_dgates (T, N, 3H): dL/d(pre-activations), blocks z, r, c.
    """
    T, N, G = act.shape
    H = G // 3
    dh_rec = np.empty((N, H), np.float32)
    drh = np.empty((N, H), np.float32)
    dzr = np.empty((N, 2 * H), np.float32)
    dhp = np.empty((N, H), np.float32)
    dac = np.empty((N, H), np.float32)
    dh_rec[:] = io_dh0
    for t in range(T - 1, -1, -1):
        for n in range(N):
            a = act[t, n]
            hp = hc[t, n]
            dt = top_diff[t, n]
            dr = dh_rec[n]
            dcn = dac[n]
            dzn = dzr[n]
            dpn = dhp[n]
            for d in range(H):
                z = a[d]
                cand = a[2 * H + d]
                dh = dt[d] + dr[d]
                dzn[d] = dh * (hp[d] - cand) * z * (_ONE - z)
                dcn[d] = dh * (_ONE - z) * (_ONE - cand * cand)
                dpn[d] = dh * z
        np.dot(dac, w_c, drh)   # dL/d(r * hp)
        for n in range(N):
            a = act[t, n]
            hp = hc[t, n]
            dzn = dzr[n]
            dpn = dhp[n]
            drn = drh[n]
            for d in range(H):
                r = a[H + d]
                dzn[H + d] = drn[d] * hp[d] * r * (_ONE - r)
                dpn[d] += drn[d] * r
        np.dot(dzr, w_zr, drh)  # reuse drh: the z, r gates' share of dL/dhp
        for n in range(N):
            dg = out_dgates[t, n]
            dzn = dzr[n]
            dcn = dac[n]
            dpn = dhp[n]
            drn = drh[n]
            dr = dh_rec[n]
            k = cont[t, n]
            for d in range(H):
                dg[d] = dzn[d]
                dg[H + d] = dzn[H + d]
                dg[2 * H + d] = dcn[d]
                dr[d] = k * (dpn[d] + drn[d])
    io_dh0[:] = dh_rec

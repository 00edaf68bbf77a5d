"""Direct convolution (stride 1, no im2col) for many-channel layers, with register-tiled vector code.

At CIFAR-10 quick's shapes (32 or 64 output channels, 800-long patches) OpenBLAS's GEMM over
im2col rows reaches ~200 GFLOP/s per core, and the rows themselves (25 copies of the image)
stream through memory besides; a square GEMM reaches ~250.  Here the image is read in place,
channels last and zero padded, and each tile of 8 output pixels of one row x 32 output channels
is summed in 16 vector registers of 16 floats (``_fwd_tile``): per input value one broadcast and
two fused multiply-adds against two vector loads of the packed weights; the tile is then
transposed in registers and stored as 32 runs of 8 pixels.  The weight gradient is
the same idea turned around (``_wgrad_tile``): 8 consecutive patch entries x 32 output channels
stay in registers while the loop runs over every pixel of a chunk of images.  The input gradient
is a forward pass over the zero-padded top diff with the filters rotated and transposed.

The tiles are written as LLVM IR through llvmlite (Numba's own code generator), because Numba's
auto-vectorizer keeps such an accumulator tile in memory (9 GFLOP/s where this runs ~250).
Vectors are 16 floats; where the target has no 512-bit registers LLVM splits them, still correct.

Layouts (all float32, C-contiguous, flat buffers with explicit sizes):
  xp   (n, Hp, Wp, Cs) the input padded by (ph, pw), channels last; ``Cs >= C`` channels per pixel
  wpk  (OB, kh, kw*C, 32) the filters packed per block of 32 output channels (zero past Cout)
  dyp  (n, OH + 2 qh, OW + 2 qw, 32 OB) the top diff channels last, padded by q = k - 1 - p
Every kernel is compiled ``nogil=True``: the two halves of a split batch run at once.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .spin import _compare_exchange, _load_acquire

#: output pixels (forward) or patch entries (weight gradient) per tile
TILE = 8
#: output channels per tile: two vectors of 16 floats
OBLOCK = 32
#: floats read past the end of a padded input by the weight gradient's last tile of a kernel row
SLACK = TILE

_F32 = ir.FloatType()
_VEC = ir.VectorType(_F32, 16)
_NV = OBLOCK // 16


def _fma(builder):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v16f32")


def _broadcast(builder, value):
    undef = ir.Constant(_VEC, ir.Undefined)
    one = builder.insert_element(undef, value, ir.IntType(32)(0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(ir.IntType(32), 16), [0] * 16))


def _vec_at(builder, base, offset):
    return builder.bitcast(builder.gep(base, [offset]), _VEC.as_pointer())


def _data(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, ary).data


def _is_f32_vector(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 1


def _transpose_rows(builder, rows):
    """16 vectors of 16 floats transposed: four rounds of two-vector shuffles that swap the
    off-diagonal sub-blocks of sizes 8, 4, 2 and 1."""
    i32 = ir.IntType(32)
    b = 8
    while b >= 1:
        low = ir.Constant(ir.VectorType(i32, 16), [j if (j // b) % 2 == 0 else 16 + j - b for j in range(16)])
        high = ir.Constant(ir.VectorType(i32, 16), [j + b if (j // b) % 2 == 0 else 16 + j for j in range(16)])
        new = list(rows)
        for r in range(16):
            if (r // b) % 2 == 0:
                new[r] = builder.shuffle_vector(rows[r], rows[r + b], low)
                new[r + b] = builder.shuffle_vector(rows[r], rows[r + b], high)
        rows = new
        b //= 2
    return rows


@intrinsic
def _fwd_tile(typingctx, x, xo, rs, nrow, rowlen, cs, w, wo, y, yo, ys, nvalid, bias, bo):
    """One tile of 8 output pixels (``cs`` floats apart in ``x``) x 32 channels:
    ``s[t, o] = sum_{r < nrow, k < rowlen} x[xo + r*rs + t*cs + k] * w[wo + (r*rowlen + k)*32 + o]``,
    then ``y[yo + o*ys + t] = s[t, o] + bias[bo + o]`` for o < ``nvalid``: the sums are transposed
    in registers and each channel's 8 pixels stored as one vector."""
    if not all(_is_f32_vector(a) for a in (x, w, y, bias)):
        return None
    sig = types.void(x, xo, rs, nrow, rowlen, cs, w, wo, y, yo, ys, nvalid, bias, bo)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        ints = [context.cast(builder, args[i], signature.args[i], types.intp)
                if isinstance(signature.args[i], types.Integer) else None for i in range(len(args))]
        xo_, rs_, nrow_, rowlen_, cs_ = ints[1:6]
        wo_, yo_, ys_, nvalid_, bo_ = ints[7], ints[9], ints[10], ints[11], ints[13]
        xbase = builder.gep(_data(context, builder, signature.args[0], args[0]), [xo_])
        wbase = builder.gep(_data(context, builder, signature.args[6], args[6]), [wo_])
        ybase = builder.gep(_data(context, builder, signature.args[8], args[8]), [yo_])
        bbase = builder.gep(_data(context, builder, signature.args[12], args[12]), [bo_])
        fma = _fma(builder)
        zero = ir.Constant(_VEC, [0.0] * 16)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(_NV)] for _ in range(TILE)]
        tofs = [builder.mul(cs_, i64(t)) for t in range(TILE)]
        with cgutils.for_range(builder, nrow_) as row:
            xr = builder.gep(xbase, [builder.mul(row.index, rs_)])
            wr = builder.gep(wbase, [builder.mul(builder.mul(row.index, rowlen_), i64(OBLOCK))])
            with cgutils.for_range(builder, rowlen_) as k:
                wk = builder.gep(wr, [builder.mul(k.index, i64(OBLOCK))])
                wvec = [builder.load(_vec_at(builder, wk, i64(16 * v)), align=4) for v in range(_NV)]
                xk = builder.gep(xr, [k.index])
                for t in range(TILE):
                    b = _broadcast(builder, builder.load(builder.gep(xk, [tofs[t]]), align=4))
                    for v in range(_NV):
                        builder.store(builder.call(fma, [b, wvec[v], builder.load(acc[t][v])]), acc[t][v])
        vec8 = ir.VectorType(_F32, TILE)
        first8 = ir.Constant(ir.VectorType(ir.IntType(32), TILE), list(range(TILE)))
        undef = ir.Constant(_VEC, ir.Undefined)
        for v in range(_NV):
            cols = _transpose_rows(builder, [builder.load(acc[t][v]) for t in range(TILE)] + [undef] * (16 - TILE))
            for c in range(16):
                o = 16 * v + c
                with cgutils.if_likely(builder, builder.icmp_signed("<", i64(o), nvalid_)):
                    bias8 = builder.shuffle_vector(
                        builder.insert_element(ir.Constant(vec8, ir.Undefined), builder.load(builder.gep(bbase, [i64(o)])),
                                               ir.IntType(32)(0)),
                        ir.Constant(vec8, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), TILE), [0] * TILE))
                    val = builder.fadd(builder.shuffle_vector(cols[c], undef, first8), bias8)
                    dst = builder.bitcast(builder.gep(ybase, [builder.mul(ys_, i64(o))]), vec8.as_pointer())
                    builder.store(val, dst, align=4)
        return context.get_dummy_value()

    return sig, codegen


def _wgrad_intrinsic(T: int, NV: int):
    """The weight-gradient tile of ``T`` patch entries x ``16 NV`` output channels (see
    ``_wgrad_tile``): ``T NV`` vector accumulators, per pixel ``NV`` vector loads of the top diff
    and ``T`` broadcasts of the input."""
    W = 16 * NV

    def tile(typingctx, x, xo, xis, xrs, cs, dy, dyo, dis, drs, dps, nimg, nrows, ncols, acc, acco):
        if not (_is_f32_vector(x) and _is_f32_vector(dy) and _is_f32_vector(acc)):
            return None
        sig = types.void(x, xo, xis, xrs, cs, dy, dyo, dis, drs, dps, nimg, nrows, ncols, acc, acco)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            ints = [context.cast(builder, args[i], signature.args[i], types.intp) for i in range(len(args))]
            xo_, xis_, xrs_, cs_ = ints[1:5]
            dyo_, dis_, drs_, dps_, nimg_, nrows_, ncols_ = ints[6:13]
            acco_ = ints[14]
            xbase = builder.gep(_data(context, builder, signature.args[0], args[0]), [xo_])
            dbase = builder.gep(_data(context, builder, signature.args[5], args[5]), [dyo_])
            abase = builder.gep(_data(context, builder, signature.args[13], args[13]), [acco_])
            fma = _fma(builder)
            acc = []
            for t in range(T):
                acc.append([cgutils.alloca_once_value(builder, builder.load(
                    _vec_at(builder, abase, i64(t * W + 16 * v)), align=4)) for v in range(NV)])
            with cgutils.for_range(builder, nimg_) as b:
                xb = builder.gep(xbase, [builder.mul(b.index, xis_)])
                db = builder.gep(dbase, [builder.mul(b.index, dis_)])
                with cgutils.for_range(builder, nrows_) as i:
                    xi = builder.gep(xb, [builder.mul(i.index, xrs_)])
                    di = builder.gep(db, [builder.mul(i.index, drs_)])

                    def pixel(jx):
                        xj = builder.gep(xi, [builder.mul(jx, cs_)])
                        dj = builder.gep(di, [builder.mul(jx, dps_)])
                        dvec = [builder.load(_vec_at(builder, dj, i64(16 * v)), align=4) for v in range(NV)]
                        for t in range(T):
                            s = _broadcast(builder, builder.load(builder.gep(xj, [i64(t)]), align=4))
                            for v in range(NV):
                                builder.store(builder.call(fma, [s, dvec[v], builder.load(acc[t][v])]), acc[t][v])

                    # rows of 8 pixels (CIFAR-10 quick's conv3, LeNet's conv2) written out: the
                    # loop's own work was a fifth of so short a row's
                    with builder.if_else(builder.icmp_signed("==", ncols_, i64(8))) as (eight, other):
                        with eight:
                            for jj in range(8):
                                pixel(i64(jj))
                        with other, cgutils.for_range(builder, ncols_) as j:
                            pixel(j.index)
            for t in range(T):
                for v in range(NV):
                    builder.store(builder.load(acc[t][v]), _vec_at(builder, abase, i64(t * W + 16 * v)), align=4)
            return context.get_dummy_value()

        return sig, codegen

    tile.__doc__ = (f"``acc[acco + t*{W} + o] += sum_{{b, i, j}} x[xo + b*xis + i*xrs + j*cs + t] * "
                    f"dy[dyo + b*dis + i*drs + j*dps + o]`` for t < {T}, o < {W}: {T} consecutive patch entries "
                    f"x {W} output channels over ``nimg`` images of ``nrows`` x ``ncols`` output pixels.")
    return intrinsic(tile)


#: 8 patch entries x 32 channels (16 accumulators); for 64, 128, ... channels 6 x 64 (24
#: accumulators): per pixel 4 + 6 loads feed 24 multiply-adds instead of 2 + 8 feeding 16, and
#: each pass reads whole 256-byte runs of the top diff (measured at CIFAR-10 quick's conv3, 64
#: channels on 8 x 8 pixels: see benchmarks/conv_threads.py).
_wgrad_tile = _wgrad_intrinsic(TILE, _NV)
_wgrad_tile_wide = _wgrad_intrinsic(6, 4)


@njit(cache=True)
def wgrad_blocks(Oc, rowlen):
    """(output channels per block, patch entries per tile, a kernel row's entries rounded up to
    whole tiles) of the weight-gradient accumulator for ``Oc`` output channels."""
    if Oc % 64 == 0:
        return 64, 6, (rowlen + 5) // 6 * 6
    return OBLOCK, TILE, (rowlen + TILE - 1) // TILE * TILE


def _transpose16_intrinsic(summing: bool):
    """:func:`_transpose16`, or (``summing``) its twin that also adds each channel row's 16
    values into ``lanes[lo + 16 r:lo + 16 r + 16]`` (per-lane channel sums: the bias gradient)."""

    def transpose(typingctx, src, so, ss, dst, d0, d1, split, ps, lanes, lo):
        if not (_is_f32_vector(src) and _is_f32_vector(dst) and _is_f32_vector(lanes)):
            return None
        sig = types.void(src, so, ss, dst, d0, d1, split, ps, lanes, lo)

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            so_, ss_, d0, d1, split, ps, lo = (context.cast(builder, args[i], signature.args[i], types.intp)
                                                for i in (1, 2, 4, 5, 6, 7, 9))
            base = builder.gep(_data(context, builder, signature.args[0], args[0]), [so_])
            out = _data(context, builder, signature.args[3], args[3])
            rows = [builder.load(_vec_at(builder, base, builder.mul(ss_, i64(r))), align=4) for r in range(16)]
            if summing:
                lbase = builder.gep(_data(context, builder, signature.args[8], args[8]), [lo])
                for r in range(16):
                    at = _vec_at(builder, lbase, i64(16 * r))
                    builder.store(builder.fadd(builder.load(at, align=4), rows[r]), at, align=4)
            rows = _transpose_rows(builder, rows)
            for p in range(16):
                first = builder.add(d0, builder.mul(ps, i64(p)))
                second = builder.add(d1, builder.mul(ps, builder.sub(i64(p), split)))
                at = builder.select(builder.icmp_signed("<", i64(p), split), first, second)
                builder.store(rows[p], _vec_at(builder, out, at), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(transpose)


#: ``_transpose16(src, so, ss, dst, d0, d1, split, ps, lanes, lo)``: ``dst[at(p) + r] = src[so +
#: r*ss + p]`` for r, p < 16, with ``at(p) = d0 + p*ps`` for p < split and ``d1 + (p - split)*ps``
#: after: a 16 x 16 block transposed in registers (:func:`_transpose_rows`), so 16 channel rows of
#: 16 pixels (which may end one image row and start the next) become 16 pixels' channel runs
#: without strided stores.  ``lanes``/``lo`` are unused; ``_transpose16_sum`` also sums.
_transpose16 = _transpose16_intrinsic(False)
_transpose16_sum = _transpose16_intrinsic(True)


@njit(cache=True, nogil=True)
def pad_nhwc(x, ph, pw, cs, out):
    """``out`` (n, H + 2 ph, W + 2 pw, cs), flat, = ``x`` (n, C, H, W) channels last, zero padded
    (the border and channels C..cs-1); the rest of ``out`` (the slack) is left alone.  Blocks of
    16 channels x 16 pixels (in the image's flat pixel order) go through :func:`_transpose16` when
    a block spans at most two image rows (W = 8 or a multiple of 16); the rest element by element."""
    _pad_nhwc(x, ph, pw, cs, out, out, False)


@njit(cache=True, nogil=True)
def _pad_nhwc(x, ph, pw, cs, out, lanes, summing):
    """:func:`pad_nhwc`; with ``summing`` (and H*W a multiple of 16) the blocked channels' values
    are also added into ``lanes`` (16 per channel).  Returns how many channels were summed so."""
    n, C, H, W = x.shape
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    HW = H * W
    C16 = C // 16 * 16 if HW >= 16 and (W == 8 or W % 16 == 0) else 0
    if summing and HW % 16:
        C16 = 0  # the last block would overlap the one before it and count pixels twice
    for b in range(n):
        img = out[b * Hp * Wp * cs:(b + 1) * Hp * Wp * cs]
        img[:ph * Wp * cs] = 0.0
        img[(ph + H) * Wp * cs:] = 0.0
        for i in range(H):
            rowv = img[(ph + i) * Wp * cs:(ph + i + 1) * Wp * cs]
            rowv[:pw * cs] = 0.0
            rowv[(pw + W) * cs:] = 0.0
            if cs > C:
                for j in range(W):
                    rowv[(pw + j) * cs + C:(pw + j + 1) * cs] = 0.0
        xf = x[b].reshape(C * HW)
        for q0 in range(0, HW, 16):
            q0 = min(q0, HW - 16)  # the last block overlaps the one before it
            i = q0 // W
            j = q0 - i * W
            split = min(16, W - j)
            d0 = ((ph + i) * Wp + pw + j) * cs
            d1 = ((ph + i + 1) * Wp + pw) * cs
            for c0 in range(0, C16, 16):
                if summing:
                    _transpose16_sum(xf, c0 * HW + q0, HW, img, d0 + c0, d1 + c0, split, cs, lanes, c0 * 16)
                else:
                    _transpose16(xf, c0 * HW + q0, HW, img, d0 + c0, d1 + c0, split, cs, lanes, 0)
        for c in range(C16, C):
            for i in range(H):
                src = x[b, c, i]
                rowv = img[(ph + i) * Wp * cs:(ph + i + 1) * Wp * cs]
                for j in range(W):
                    rowv[(pw + j) * cs + c] = src[j]
    return C16


@njit(cache=True, nogil=True)
def conv_forward_direct(xp, n, Hp, Wp, C, wpk, kh, kw, bias, y):
    """``y`` (n, O, OH, OW) = the stride-1 correlation of the padded channels-last ``xp`` with
    ``wpk`` (flat (OB, kh, kw*C, 32)) plus ``bias`` (at least O floats; zeros for none).  Needs
    OW >= 8: a row's last tile overlaps the one before it."""
    O = y.shape[1]
    OH = y.shape[2]
    OW = y.shape[3]
    P = OH * OW
    rowlen = kw * C
    OB = (O + OBLOCK - 1) // OBLOCK
    yf = y.reshape(-1)
    for b in range(n):
        for i in range(OH):
            for jt in range(0, OW, TILE):
                j0 = min(jt, OW - TILE)
                xo = ((b * Hp + i) * Wp + j0) * C
                for ob in range(OB):
                    _fwd_tile(xp, xo, Wp * C, kh, rowlen, C, wpk, ob * kh * rowlen * OBLOCK,
                              yf, (b * O + ob * OBLOCK) * P + i * OW + j0, P, O - ob * OBLOCK, bias, ob * OBLOCK)


@njit(cache=True, nogil=True)
def conv_wgrad_direct(xp, n, Hp, Wp, C, dyp, Oc, OHp, OWp, qh, qw, OH, OW, kh, kw, acc):
    """``acc`` (flat (Oc/B, kh, R, B) with (B, T, R) = :func:`wgrad_blocks`) += the weight
    gradient of a stride-1 convolution: the correlation of ``xp`` (padded input, channels last)
    with ``dyp`` (the top diff channels last, ``Oc`` channels, a multiple of 32, padded by
    (qh, qw); its interior is read).  Entries kw*C..R-1 of each kernel row collect sums over
    entries past the row: ignore them."""
    B, T, R = wgrad_blocks(Oc, kw * C)
    for ob in range(Oc // B):
        for di in range(kh):
            for k0 in range(0, R, T):
                args = (xp, di * Wp * C + k0, Hp * Wp * C, Wp * C, C, dyp, (qh * OWp + qw) * Oc + ob * B,
                        OHp * OWp * Oc, OWp * Oc, Oc, n, OH, OW, acc, ((ob * kh + di) * R + k0) * B)
                if B == OBLOCK:
                    _wgrad_tile(*args)
                else:
                    _wgrad_tile_wide(*args)


@njit(cache=True, nogil=True)
def pad_nhwc_sum(x, ph, pw, cs, out, sums, lanes):
    """:func:`pad_nhwc`, and ``sums[c] += x[:, c].sum()`` (the bias gradient from the top diff),
    summed per lane in ``lanes`` (16 C floats of scratch) while the blocks pass through the
    registers, so the top diff is read once."""
    C = x.shape[1]
    lanes[:16 * C] = 0.0
    done = _pad_nhwc(x, ph, pw, cs, out, lanes, True)
    for c in range(done):
        s = np.float32(0)
        for lane in range(16):
            s += lanes[16 * c + lane]
        sums[c] += s
    if done < C:
        _channel_sums(x[:, done:], sums[done:])


@njit(cache=True, nogil=True)
def _channel_sums(x, sums):
    """``sums[c] += x[:, c].sum()``, a row at a time."""
    n, C, H, W = x.shape
    for c in range(C):
        s = np.float32(0)
        for b in range(n):
            for i in range(H):
                row = x[b, c, i]
                r = np.float32(0)
                for j in range(W):
                    r += row[j]
                s += r
        sums[c] += s


@njit(cache=True, nogil=True)
def take_next(counter):
    """Atomically ``counter[0] += 1``; the value before (a work item only this caller gets)."""
    while True:
        v = _load_acquire(counter, 0)
        if _compare_exchange(counter, 0, v, v + 1):
            return v


@njit(cache=True, nogil=True)
def conv_forward_chunks(x, ph, pw, wpk, kh, kw, bias, y, xp, step, counter):
    """``y = conv(x) + bias`` (stride 1, pad (ph, pw)) ``step`` images at a time: each chunk
    padded channels last into ``xp`` and run through :func:`conv_forward_direct`.  The chunks are
    taken from the shared ``counter`` (zero at the start), so the two threads of a split batch
    call this at once, each with its own ``xp``, and whichever runs faster does more of them (a
    fixed half each left one thread idle for 40-100 us at the end: the worker wakes later and its
    core is often the busier).  Each chunk writes only its own images: the result does not
    depend on who ran it."""
    n, C, H, W = x.shape
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    while True:
        n0 = take_next(counter) * step
        if n0 >= n:
            return
        n1 = min(n, n0 + step)
        pad_nhwc(x[n0:n1], ph, pw, C, xp)
        conv_forward_direct(xp, n1 - n0, Hp, Wp, C, wpk, kh, kw, bias, y[n0:n1])


@njit(cache=True, nogil=True)
def conv_backward_chunks(x, dy, ph, pw, kh, kw, wT, dx, acc, db, xp, dyp, zeros, lanes, step, need_x, need_w,
                         need_b):
    """One half of a direct backward pass, ``step`` images at a time: ``db += sum dy`` (when
    ``need_b``), ``acc += dW`` in the packed layout of :func:`conv_wgrad_direct` (``need_w``) and
    ``dx`` = the forward over the top diff padded by (kh - 1 - ph, kw - 1 - pw) with the rotated
    filters ``wT`` (``need_x``; then ph < kh and pw < kw).  ``zeros``: C zeros (dx's bias);
    ``lanes``: 16 O floats of scratch for the bias gradient's per-lane sums.  The top diff goes
    channels last with its O channels padded to whole blocks of 32 (zeros)."""
    n, C, H, W = x.shape
    O, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    Oc = (O + OBLOCK - 1) // OBLOCK * OBLOCK
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    qh = max(kh - 1 - ph, 0) if need_x else 0  # the top diff's pad: only dx reads it
    qw = max(kw - 1 - pw, 0) if need_x else 0
    OHp = OH + 2 * qh
    OWp = OW + 2 * qw
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        if not (need_w or need_x):
            if need_b:
                _channel_sums(dy[n0:n1], db)
            continue
        if need_b:
            pad_nhwc_sum(dy[n0:n1], qh, qw, Oc, dyp, db, lanes)
        else:
            pad_nhwc(dy[n0:n1], qh, qw, Oc, dyp)
        if need_w:
            pad_nhwc(x[n0:n1], ph, pw, C, xp)
            conv_wgrad_direct(xp, n1 - n0, Hp, Wp, C, dyp, Oc, OHp, OWp, qh, qw, OH, OW, kh, kw, acc)
        if need_x:
            conv_forward_direct(dyp, n1 - n0, OHp, OWp, Oc, wT, kh, kw, zeros, dx[n0:n1])


@njit(cache=True, nogil=True)
def pack_filters(w, kh, kw, out):
    """``out`` (ceil(O/32), kh, kw*C, 32), flat, from the filters ``w`` (O, C*kh*kw) in Caffe's
    order: ``out[ob, di, dj*C + c, o] = w[32 ob + o, (c*kh + di)*kw + dj]``, zero past O.  ``w``
    is usually out of cache (the convolution ran since): it is first read through in order,
    which the prefetcher streams, then gathered 32 rows at a time from L2 (reading the 32 rows
    straight from memory took 77 us for CIFAR-10 quick's conv3, the two passes ~20)."""
    O, K = w.shape
    C = K // (kh * kw)
    t = np.float32(0)
    for o in range(O):  # the streaming pass
        row = w[o]
        for k in range(0, K, 16):
            t += row[k]
    for ob in range((O + OBLOCK - 1) // OBLOCK):
        n = min(OBLOCK, O - ob * OBLOCK)
        for c in range(C):
            for di in range(kh):
                for dj in range(kw):
                    at = (((ob * kh + di) * kw + dj) * C + c) * OBLOCK
                    src = (c * kh + di) * kw + dj
                    if n == OBLOCK:
                        for o in range(OBLOCK):
                            out[at + o] = w[ob * OBLOCK + o, src]
                    else:
                        for o in range(OBLOCK):
                            out[at + o] = w[ob * OBLOCK + o, src] if o < n else np.float32(0)
    return t  # returned so that the compiler keeps the streaming pass


@njit(cache=True, nogil=True)
def pack_rotated_filters(wpk, O, C, kh, kw, out):
    """``out`` (C/32, kh, kw*O, 32), flat: the filters turned by 180 degrees with input and output
    channels swapped, for the input gradient (``out[cb, di, dj*O + o, c] = w[o, 32 cb + c, kh-1-di,
    kw-1-dj]``), made from the forward packing ``wpk`` (:func:`pack_filters`) by 16 x 16 block
    transposes in registers.  C and O multiples of 32."""
    for di in range(kh):
        for dj in range(kw):
            src_tap = (kh - 1 - di) * kw + kw - 1 - dj
            for ob in range(O // OBLOCK):
                for cb in range(C // OBLOCK):
                    for o16 in range(0, OBLOCK, 16):
                        for c16 in range(0, OBLOCK, 16):
                            src = ((ob * kh * kw + src_tap) * C + cb * OBLOCK + c16) * OBLOCK + o16
                            dst = (((cb * kh + di) * kw + dj) * O + ob * OBLOCK + o16) * OBLOCK + c16
                            _transpose16(wpk, src, OBLOCK, out, dst, dst, 16, OBLOCK, out, 0)


@njit(cache=True, nogil=True)
def add_packed_gradient(acc, parts, kh, kw, mask, dw):
    """``dw`` (O, C*kh*kw) in Caffe's order ``+=`` the sum of ``parts`` packed weight gradients
    ``acc`` (parts, ceil(O/B), kh, R, B) (:func:`conv_wgrad_direct`; the rows past O are padding), times ``mask`` (O, C) if it is
    not empty (a connection table: the unlisted filters never move)."""
    O, K = dw.shape
    C = K // (kh * kw)
    masked = mask.size > 0
    B = acc.shape[4]
    for ob in range((O + B - 1) // B):  # a block of B rows of dw is written a column at a time
        for c in range(C):
            for di in range(kh):
                for dj in range(kw):
                    at = dj * C + c
                    col = (c * kh + di) * kw + dj
                    for oo in range(min(B, O - ob * B)):
                        o = ob * B + oo
                        if masked and not mask[o, c]:
                            continue
                        s = acc[0, ob, di, at, oo]
                        for k in range(1, parts):
                            s += acc[k, ob, di, at, oo]
                        dw[o, col] += s

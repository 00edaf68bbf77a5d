"""Direct convolution (stride 1, no im2col) for many-channel layers, with register-tiled vector code.

At CIFAR-10 quick's shapes (32 or 64 output channels, 800-long patches) OpenBLAS's GEMM over
im2col rows reaches ~200 GFLOP/s per core, and the rows themselves (25 copies of the image)
stream through memory besides; a square GEMM reaches ~250.  Here the image is read in place,
channels last and zero padded, and each tile of 8 output pixels of one row x 32 output channels
is summed in 16 vector registers of 16 floats (``_fwd_tile``): per input value one broadcast and
two fused multiply-adds against two vector loads of the packed weights.  The weight gradient is
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


@intrinsic
def _fwd_tile(typingctx, x, xo, rs, nrow, rowlen, cs, w, wo, out):
    """``out[t*32 + o] = sum_{r < nrow, k < rowlen} x[xo + r*rs + t*cs + k] * w[wo + (r*rowlen + k)*32 + o]``
    for t < 8, o < 32: one tile of 8 output pixels (``cs`` floats apart) x 32 channels."""
    if not (_is_f32_vector(x) and _is_f32_vector(w) and _is_f32_vector(out)):
        return None
    sig = types.void(x, xo, rs, nrow, rowlen, cs, w, wo, out)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        xv, xo_, rs_, nrow_, rowlen_, cs_, wv, wo_, outv = args
        xo_, rs_, nrow_, rowlen_, cs_, wo_ = (context.cast(builder, a, t, types.intp) for a, t in
                                              zip((xo_, rs_, nrow_, rowlen_, cs_, wo_),
                                                  (signature.args[i] for i in (1, 2, 3, 4, 5, 7))))
        xbase = builder.gep(_data(context, builder, signature.args[0], xv), [xo_])
        wbase = builder.gep(_data(context, builder, signature.args[6], wv), [wo_])
        outp = _data(context, builder, signature.args[8], outv)
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
        for t in range(TILE):
            for v in range(_NV):
                builder.store(builder.load(acc[t][v]), _vec_at(builder, outp, i64((t * _NV + v) * 16)), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _wgrad_tile(typingctx, x, xo, xis, xrs, cs, dy, dyo, dis, drs, dps, nimg, nrows, ncols, acc, acco):
    """``acc[acco + t*32 + o] += sum_{b, i, j} x[xo + b*xis + i*xrs + j*cs + t] * dy[dyo + b*dis + i*drs + j*dps + o]``
    for t < 8, o < 32: 8 consecutive patch entries x 32 output channels over ``nimg`` images of
    ``nrows`` x ``ncols`` output pixels."""
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
        for t in range(TILE):
            acc.append([cgutils.alloca_once_value(builder, builder.load(
                _vec_at(builder, abase, i64((t * _NV + v) * 16)), align=4)) for v in range(_NV)])
        with cgutils.for_range(builder, nimg_) as b:
            xb = builder.gep(xbase, [builder.mul(b.index, xis_)])
            db = builder.gep(dbase, [builder.mul(b.index, dis_)])
            with cgutils.for_range(builder, nrows_) as i:
                xi = builder.gep(xb, [builder.mul(i.index, xrs_)])
                di = builder.gep(db, [builder.mul(i.index, drs_)])
                with cgutils.for_range(builder, ncols_) as j:
                    xj = builder.gep(xi, [builder.mul(j.index, cs_)])
                    dj = builder.gep(di, [builder.mul(j.index, dps_)])
                    dvec = [builder.load(_vec_at(builder, dj, i64(16 * v)), align=4) for v in range(_NV)]
                    for t in range(TILE):
                        s = _broadcast(builder, builder.load(builder.gep(xj, [i64(t)]), align=4))
                        for v in range(_NV):
                            builder.store(builder.call(fma, [s, dvec[v], builder.load(acc[t][v])]), acc[t][v])
        for t in range(TILE):
            for v in range(_NV):
                builder.store(builder.load(acc[t][v]), _vec_at(builder, abase, i64((t * _NV + v) * 16)), align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def pad_nhwc(x, ph, pw, cs, out):
    """``out`` (n, H + 2 ph, W + 2 pw, cs), flat, = ``x`` (n, C, H, W) channels last, zero padded
    (the border and channels C..cs-1); the rest of ``out`` (the slack) is left alone."""
    n, C, H, W = x.shape
    Hp = H + 2 * ph
    Wp = W + 2 * pw
    for b in range(n):
        img = out[b * Hp * Wp * cs:(b + 1) * Hp * Wp * cs]
        for i in range(Hp):
            rowv = img[i * Wp * cs:(i + 1) * Wp * cs]
            if i < ph or i >= ph + H:
                rowv[:] = 0.0
                continue
            rowv[:pw * cs] = 0.0
            rowv[(pw + W) * cs:] = 0.0
            for c in range(C, cs):
                for j in range(W):
                    rowv[(pw + j) * cs + c] = 0.0
            for c in range(C):
                src = x[b, c, i - ph]
                for j in range(W):
                    rowv[(pw + j) * cs + c] = src[j]


@njit(cache=True, nogil=True)
def conv_forward_direct(xp, n, Hp, Wp, C, wpk, kh, kw, bias, y, tile):
    """``y`` (n, O, OH, OW) = the stride-1 correlation of the padded channels-last ``xp`` with
    ``wpk`` (flat (OB, kh, kw*C, 32)) plus ``bias`` (O,; empty for none).  ``tile``: 256 floats
    of scratch.  Needs OW >= 8: a row's last tile overlaps the one before it."""
    O = y.shape[1]
    OH = y.shape[2]
    OW = y.shape[3]
    rowlen = kw * C
    OB = (O + OBLOCK - 1) // OBLOCK
    has_bias = bias.size > 0
    for b in range(n):
        for i in range(OH):
            for jt in range(0, OW, TILE):
                j0 = min(jt, OW - TILE)
                xo = ((b * Hp + i) * Wp + j0) * C
                for ob in range(OB):
                    _fwd_tile(xp, xo, Wp * C, kh, rowlen, C, wpk, ob * kh * rowlen * OBLOCK, tile)
                    for o in range(ob * OBLOCK, min(O, (ob + 1) * OBLOCK)):
                        add = bias[o] if has_bias else np.float32(0)
                        yrow = y[b, o, i]
                        for t in range(TILE):
                            yrow[j0 + t] = tile[t * OBLOCK + o - ob * OBLOCK] + add


@njit(cache=True, nogil=True)
def conv_wgrad_direct(xp, n, Hp, Wp, C, dyp, Oc, OHp, OWp, qh, qw, OH, OW, kh, kw, acc):
    """``acc`` (flat (OB, kh, R8, 32), R8 = kw*C rounded up to 8) += the weight gradient of a
    stride-1 convolution: the correlation of ``xp`` (padded input, channels last) with ``dyp``
    (the top diff channels last, ``Oc`` = 32 OB channels, padded by (qh, qw); its interior is read).
    Rows R..R8-1 of each kernel row collect sums over entries past the row: ignore them."""
    rowlen = kw * C
    r8 = (rowlen + TILE - 1) // TILE * TILE
    OB = Oc // OBLOCK
    for ob in range(OB):
        for di in range(kh):
            for k0 in range(0, r8, TILE):
                _wgrad_tile(xp, di * Wp * C + k0, Hp * Wp * C, Wp * C, C,
                            dyp, (qh * OWp + qw) * Oc + ob * OBLOCK, OHp * OWp * Oc, OWp * Oc, Oc, n, OH, OW,
                            acc, ((ob * kh + di) * r8 + k0) * OBLOCK)

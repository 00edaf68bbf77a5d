"""im2col / col2im (and im2row / row2im) against plain NumPy loop references.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels): keep shapes small.
"""
import numpy as np
import pytest

from pycaffe_lite.kernels.im2col import (
    col2im_batch,
    conv_out_size,
    im2col_batch,
    im2row_batch,
    im2row_nhwc,
    make_geom,
    row2im_batch,
    row2im_nhwc,
)

# (N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw)
CASES = {
    "random": (2, 3, 9, 8, 3, 3, 1, 1, 1, 1, 1, 1),
    "odd_7x5_s2_p1_d2": (2, 2, 7, 5, 3, 2, 2, 1, 1, 2, 2, 1),
    "nonsquare_strided": (3, 2, 6, 7, 2, 3, 3, 2, 0, 1, 1, 2),
    "stride_gt_kernel": (2, 1, 9, 9, 2, 2, 3, 3, 0, 0, 1, 1),
    "pad_gt_kernel": (1, 2, 4, 3, 1, 2, 1, 1, 2, 2, 1, 1),
    "lenet_like": (2, 1, 12, 12, 5, 5, 1, 1, 0, 0, 1, 1),
    "size1": (1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1),
    "size1_padded": (1, 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1),
    "size1_kernel_covers_pad": (1, 1, 1, 1, 3, 2, 2, 2, 1, 1, 1, 1),
    "kernel_wider_than_image": (1, 1, 2, 1, 2, 7, 1, 2, 0, 3, 1, 1),  # some taps never hit
}


def _setup(case, seed=0):
    N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw = CASES[case]
    geom = make_geom(C, H, W, kh, kw, sh, sw, ph, pw, dh, dw)
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(np.float32)
    return x, geom


def ref_im2col(x, geom):
    """col[c*kh*kw + i*kw + j, n*OH*OW + oh*OW + ow], zero padding, written out by hand."""
    C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = (int(v) for v in geom)
    N = x.shape[0]
    col = np.zeros((C * kh * kw, N * OH * OW), np.float32)
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                for n in range(N):
                    for oh in range(OH):
                        for ow in range(OW):
                            h = oh * sh - ph + i * dh
                            w = ow * sw - pw + j * dw
                            if 0 <= h < H and 0 <= w < W:
                                col[(c * kh + i) * kw + j, (n * OH + oh) * OW + ow] = x[n, c, h, w]
    return col


def ref_col2im(col, geom, N):
    """Sum each column entry into the pixel it came from, rows in increasing order (Caffe's)."""
    C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW = (int(v) for v in geom)
    x = np.zeros((N, C, H, W), np.float32)
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                for n in range(N):
                    for oh in range(OH):
                        for ow in range(OW):
                            h = oh * sh - ph + i * dh
                            w = ow * sw - pw + j * dw
                            if 0 <= h < H and 0 <= w < W:
                                x[n, c, h, w] += col[(c * kh + i) * kw + j, (n * OH + oh) * OW + ow]
    return x


def _col_shape(x, geom):
    C, kh, kw, OH, OW = (int(geom[k]) for k in (0, 3, 4, 11, 12))
    return C * kh * kw, x.shape[0] * OH * OW


@pytest.mark.parametrize("case", CASES)
def test_im2col_matches_reference(case):
    x, geom = _setup(case)
    col = np.full(_col_shape(x, geom), np.nan, np.float32)  # every element must be written
    im2col_batch(x, geom, col)
    np.testing.assert_array_equal(col, ref_im2col(x, geom))


@pytest.mark.parametrize("case", CASES)
def test_col2im_matches_reference(case):
    x, geom = _setup(case)
    col = np.random.default_rng(1).standard_normal(_col_shape(x, geom)).astype(np.float32)
    out = np.full_like(x, np.nan)  # the kernel zeroes it
    col2im_batch(col, geom, out)
    # Same summation order as the reference (and Caffe), so the bits agree.
    np.testing.assert_array_equal(out, ref_col2im(col, geom, x.shape[0]))


@pytest.mark.parametrize("case", CASES)
def test_col2im_is_adjoint_of_im2col(case):
    x, geom = _setup(case)
    c = np.random.default_rng(2).standard_normal(_col_shape(x, geom)).astype(np.float32)
    col = np.empty_like(c)
    im2col_batch(x, geom, col)
    xt = np.empty_like(x)
    col2im_batch(c, geom, xt)
    lhs = np.vdot(col.astype(np.float64), c.astype(np.float64))
    rhs = np.vdot(x.astype(np.float64), xt.astype(np.float64))
    assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_im2row_is_transposed_im2col_and_row2im_matches_col2im(case):
    x, geom = _setup(case)
    K, Q = _col_shape(x, geom)
    rows = np.full((Q, K), np.nan, np.float32)
    im2row_batch(x, geom, rows)
    np.testing.assert_array_equal(rows, ref_im2col(x, geom).T)

    col = np.random.default_rng(3).standard_normal((K, Q)).astype(np.float32)
    a = np.full_like(x, np.nan)
    b = np.full_like(x, np.nan)
    col2im_batch(col, geom, a)
    row2im_batch(np.ascontiguousarray(col.T), geom, b)
    np.testing.assert_array_equal(a, b)


def test_one_gemm_over_the_batch_is_the_convolution():
    """The layer's use: W (Cout, C*kh*kw) @ col -> (Cout, N*OH*OW) -> NCHW, vs direct loops."""
    x, geom = _setup("odd_7x5_s2_p1_d2")
    N, (C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW) = x.shape[0], (int(v) for v in geom)
    Cout = 3
    weight = np.random.default_rng(4).standard_normal((Cout, C, kh, kw)).astype(np.float32)
    col = np.empty(_col_shape(x, geom), np.float32)
    im2col_batch(x, geom, col)
    y = (weight.reshape(Cout, -1) @ col).reshape(Cout, N, OH, OW).transpose(1, 0, 2, 3)

    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    ref = np.zeros((N, Cout, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            patch = xp[:, :, oh * sh:oh * sh + dh * (kh - 1) + 1:dh, ow * sw:ow * sw + dw * (kw - 1) + 1:dw]
            ref[:, :, oh, ow] = np.einsum("ncij,ocij->no", patch, weight)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "size, k, pad, stride, dilation, expected",
    [
        (28, 5, 0, 1, 1, 24),  # LeNet conv1
        (12, 5, 0, 1, 1, 8),  # LeNet conv2
        (227, 11, 0, 4, 1, 55),  # AlexNet conv1
        (7, 3, 1, 2, 2, 3),  # (7 + 2 - 5) // 2 + 1
        (5, 2, 1, 1, 1, 6),
        (1, 3, 1, 1, 1, 1),
        (4, 5, 0, 1, 1, 0),  # kernel larger than input: empty (make_geom rejects it)
    ],
)
def test_conv_out_size(size, k, pad, stride, dilation, expected):
    assert conv_out_size(size, k, pad, stride, dilation) == expected


def test_make_geom_layout_and_validation():
    g = make_geom(20, 12, 10, 5, 3, 1, 2, 0, 1, 1, 2)
    assert g.dtype == np.int64
    assert g.tolist() == [20, 12, 10, 5, 3, 1, 2, 0, 1, 1, 2, 8, 4]
    with pytest.raises(ValueError, match="output would be"):
        make_geom(1, 4, 4, 5, 5)
    with pytest.raises(ValueError, match=">= 1"):
        make_geom(1, 4, 4, 3, 3, sh=0)
    with pytest.raises(ValueError, match="pads >= 0"):
        make_geom(1, 4, 4, 3, 3, ph=-1)


def _nhwc_order(mat, geom):
    """(K, N*P) in Caffe's column order (c, i, j) -> (N*P, K) in channels-last order (i, j, c)."""
    C, kh, kw = int(geom[0]), int(geom[3]), int(geom[4])
    return mat.reshape(C, kh, kw, -1).transpose(3, 1, 2, 0).reshape(mat.shape[1], -1)


@pytest.mark.parametrize("case", CASES)
def test_im2row_nhwc_is_im2col_in_channels_last_order(case):
    x, geom = _setup(case)
    N, C = x.shape[:2]
    rows = np.full((N * int(geom[11] * geom[12]), C * int(geom[3] * geom[4])), np.nan, np.float32)
    im2row_nhwc(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), geom, rows)
    np.testing.assert_array_equal(rows, _nhwc_order(ref_im2col(x, geom), geom))  # and no NaN left


@pytest.mark.parametrize("case", CASES)
def test_row2im_nhwc_matches_col2im_and_overwrites(case):
    x, geom = _setup(case)
    N, C, H, W = x.shape
    K, P = C * int(geom[3] * geom[4]), int(geom[11] * geom[12])
    col = np.random.default_rng(5).standard_normal((K, N * P)).astype(np.float32)
    expected = np.empty_like(x)
    col2im_batch(col, geom, expected)
    out = np.full((N, H, W, C), np.nan, np.float32)
    row2im_nhwc(np.ascontiguousarray(_nhwc_order(col, geom)), geom, out)
    np.testing.assert_allclose(out.transpose(0, 3, 1, 2), expected, rtol=1e-5, atol=1e-5)

"""MAX / AVE pooling kernels against plain NumPy loop references written from Caffe's rules.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels): keep shapes small.
"""
import numpy as np
import pytest

from pycaffe_lite.kernels.pooling import (
    ave_pool_backward,
    ave_pool_forward,
    make_pool_geom,
    max_pool_backward,
    max_pool_backward_serial,
    max_pool_forward,
    pool_out_size,
)

FLT_MAX = float(np.finfo(np.float32).max)

# The parallel kernel and the serial one the layer takes for small tensors: same results.
MAX_BACKWARDS = pytest.mark.parametrize("max_backward", [max_pool_backward, max_pool_backward_serial],
                                        ids=["parallel", "serial"])

# (N, C, H, W, kh, kw, sh, sw, ph, pw)
CASES = {
    "random": (2, 3, 9, 8, 3, 2, 2, 1, 1, 0),
    "odd_7x5_s2_p1": (2, 2, 7, 5, 3, 3, 2, 2, 1, 1),
    "overlapping": (1, 2, 6, 7, 3, 3, 1, 1, 0, 0),
    "last_window_dropped": (1, 1, 4, 4, 3, 3, 3, 3, 2, 2),  # ceil gives 3, Caffe's rule 2
    "pad_only_in_w": (1, 1, 5, 6, 1, 2, 3, 2, 0, 1),  # h also corrected (pad_h || pad_w)
    "lenet_pool": (2, 3, 8, 8, 2, 2, 2, 2, 0, 0),
    "cifar_pool_3x3_s2": (2, 3, 8, 9, 3, 3, 2, 2, 0, 0),  # the last windows are clipped to 2 wide/high
    "global": (2, 3, 5, 4, 5, 4, 1, 1, 0, 0),
    "size1": (1, 1, 1, 1, 1, 1, 1, 1, 0, 0),
    "size1_padded": (1, 1, 1, 1, 2, 2, 1, 1, 1, 1),
}


def _setup(case, seed=0):
    N, C, H, W, kh, kw, sh, sw, ph, pw = CASES[case]
    geom = make_pool_geom(H, W, kh, kw, sh, sw, ph, pw)
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(np.float32)
    return x, geom


def _top_shape(x, geom):
    return x.shape[:2] + (int(geom[8]), int(geom[9]))


def _windows(geom):
    """Yield (oh, ow, h0, h1, w0, w1, pool_size): MAX/AVE share the clipped [h0, h1) x [w0, w1);
    pool_size is AVE's divisor, counting padding."""
    H, W, kh, kw, sh, sw, ph, pw, OH, OW = (int(v) for v in geom)
    for oh in range(OH):
        for ow in range(OW):
            hs, ws = oh * sh - ph, ow * sw - pw
            he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
            pool_size = (he - hs) * (we - ws)
            yield oh, ow, max(hs, 0), min(he, H), max(ws, 0), min(we, W), pool_size


def ref_max_forward(x, geom):
    W = int(geom[1])
    y = np.empty(_top_shape(x, geom), np.float32)
    mask = np.empty(y.shape, np.int32)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oh, ow, h0, h1, w0, w1, _ in _windows(geom):
                best, arg = -FLT_MAX, -1
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        if x[n, c, h, w] > best:  # first maximum wins
                            best, arg = x[n, c, h, w], h * W + w
                y[n, c, oh, ow], mask[n, c, oh, ow] = best, arg
    return y, mask


def ref_max_backward(top_diff, mask, geom, shape):
    W = int(geom[1])
    bottom = np.zeros(shape, np.float32)
    for n, c, oh, ow in np.ndindex(top_diff.shape):
        idx = mask[n, c, oh, ow]
        if idx >= 0:
            bottom[n, c, idx // W, idx % W] += top_diff[n, c, oh, ow]
    return bottom


def ref_ave_forward(x, geom):
    y = np.empty(_top_shape(x, geom), np.float64)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for oh, ow, h0, h1, w0, w1, size in _windows(geom):
                y[n, c, oh, ow] = x[n, c, h0:h1, w0:w1].astype(np.float64).sum() / size
    return y


def ref_ave_backward(top_diff, geom, shape):
    bottom = np.zeros(shape, np.float64)
    for n in range(shape[0]):
        for c in range(shape[1]):
            for oh, ow, h0, h1, w0, w1, size in _windows(geom):
                bottom[n, c, h0:h1, w0:w1] += top_diff[n, c, oh, ow] / size
    return bottom


@pytest.mark.parametrize("case", CASES)
def test_max_pool_forward(case):
    x, geom = _setup(case)
    y = np.full(_top_shape(x, geom), np.nan, np.float32)
    mask = np.full(y.shape, -7, np.int32)
    max_pool_forward(x, geom, y, mask)
    y_ref, mask_ref = ref_max_forward(x, geom)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(mask, mask_ref)
    # The mask points at the value it reports.
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, mask.reshape(flat.shape[:2] + (-1,)), 2),
                                  y.reshape(flat.shape[:2] + (-1,)))


@MAX_BACKWARDS
@pytest.mark.parametrize("case", CASES)
def test_max_pool_backward(case, max_backward):
    x, geom = _setup(case)
    y = np.empty(_top_shape(x, geom), np.float32)
    mask = np.empty(y.shape, np.int32)
    max_pool_forward(x, geom, y, mask)
    top_diff = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    bottom = np.full_like(x, np.nan)  # the kernel zeroes it
    max_backward(top_diff, mask, geom, bottom)
    # Same (oh, ow) accumulation order as the reference: exact.
    np.testing.assert_array_equal(bottom, ref_max_backward(top_diff, mask, geom, x.shape))
    # Adjoint of the (piecewise linear) forward at x: <y, t> == <x, backward(t)>.
    assert np.vdot(y.astype(np.float64), top_diff) == pytest.approx(
        np.vdot(x.astype(np.float64), bottom), rel=1e-5, abs=1e-5)


def test_max_pool_ties_first_maximum_wins():
    geom = make_pool_geom(3, 4, 2, 2, 1, 2, 0, 0)  # 2x2 windows, w stride 2: OH=2, OW=2
    x = np.array([[[[1, 5, 5, 0],
                    [5, 2, 7, 7],
                    [5, 5, 7, 7]]]], np.float32)
    y = np.empty((1, 1, 2, 2), np.float32)
    mask = np.empty(y.shape, np.int32)
    max_pool_forward(x, geom, y, mask)
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [5, 7]])
    # Row-major scan with strict '>': the first 5 / 7 of each window is recorded.
    np.testing.assert_array_equal(mask[0, 0], [[1, 6], [4, 6]])

    x = np.zeros((1, 1, 3, 4), np.float32)  # all equal: every window picks its top-left pixel
    max_pool_forward(x, geom, y, mask)
    np.testing.assert_array_equal(mask[0, 0], [[0, 2], [4, 6]])


@MAX_BACKWARDS
def test_max_pool_backward_accumulates_shared_argmax(max_backward):
    geom = make_pool_geom(3, 3, 2, 2, 1, 1, 0, 0)  # four overlapping windows share the centre
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 9
    y = np.empty((1, 1, 2, 2), np.float32)
    mask = np.empty(y.shape, np.int32)
    max_pool_forward(x, geom, y, mask)
    bottom = np.empty_like(x)
    max_backward(np.array([[[[1, 2], [3, 4]]]], np.float32), mask, geom, bottom)
    expected = np.zeros((3, 3), np.float32)
    expected[1, 1] = 10
    np.testing.assert_array_equal(bottom[0, 0], expected)


@MAX_BACKWARDS
def test_empty_windows_follow_caffe(max_backward):
    """No padding and stride > kernel: Caffe's ceil leaves a last window past the image.

    MAX gives -FLT_MAX with mask -1 (ignored by backward); AVE divides 0 by 0 (NaN)."""
    geom = make_pool_geom(4, 4, 1, 1, 2, 2, 0, 0)
    assert geom[8] == geom[9] == 3
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) + 1
    y = np.empty((1, 1, 3, 3), np.float32)
    mask = np.empty(y.shape, np.int32)
    max_pool_forward(x, geom, y, mask)
    np.testing.assert_array_equal(y[0, 0, :2, :2], [[1, 3], [9, 11]])
    assert (y[0, 0, 2, :] == -FLT_MAX).all() and (mask[0, 0, :, 2] == -1).all()
    bottom = np.empty_like(x)
    max_backward(np.ones_like(y), mask, geom, bottom)
    assert bottom.sum() == 4

    with np.errstate(invalid="ignore", divide="ignore"):  # pure-Python mode warns on 0/0
        ave_pool_forward(x, geom, y)
        ave_pool_backward(np.ones_like(y), geom, bottom)
    np.testing.assert_array_equal(y[0, 0, :2, :2], [[1, 3], [9, 11]])
    assert np.isnan(y[0, 0, 2, :]).all() and np.isnan(y[0, 0, :, 2]).all()
    assert bottom.sum() == 4  # empty windows touch no pixel


@MAX_BACKWARDS
@pytest.mark.parametrize("geom_args", [(6, 5, 2, 2, 2, 2, 0, 0), (6, 5, 2, 2, 2, 2, 1, 1), (6, 5, 2, 1, 3, 2, 1, 0),
                                       (6, 5, 3, 3, 2, 2, 1, 1)],
                         ids=["disjoint", "disjoint_padded", "disjoint_gapped", "overlapping"])
def test_max_pool_backward_many_planes_mask_dtypes(max_backward, geom_args):
    """Enough planes (N*C = 700 planes of 30 floats) to span several of the kernels' zero-then-scatter
    chunks (4096 floats), odd sizes, int16 and int32 masks; stale values in the output must go."""
    geom = make_pool_geom(*geom_args)
    x = np.random.default_rng(3).standard_normal((7, 100, 6, 5)).astype(np.float32)
    y = np.empty(_top_shape(x, geom), np.float32)
    mask = np.empty(y.shape, np.int32)
    max_pool_forward(x, geom, y, mask)
    top_diff = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
    expected = ref_max_backward(top_diff, mask, geom, x.shape)
    for dtype in (np.int16, np.int32):
        bottom = np.full_like(x, 7.0)
        max_backward(top_diff, mask.astype(dtype), geom, bottom)
        np.testing.assert_array_equal(bottom, expected)
    if geom_args[4] >= geom_args[2] and geom_args[5] >= geom_args[3]:  # disjoint: a pixel per window
        assert np.count_nonzero(expected) == np.count_nonzero(mask >= 0)


@pytest.mark.parametrize("case", CASES)
def test_ave_pool_forward(case):
    x, geom = _setup(case)
    y = np.full(_top_shape(x, geom), np.nan, np.float32)
    ave_pool_forward(x, geom, y)
    np.testing.assert_allclose(y, ref_ave_forward(x, geom), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_ave_pool_backward(case):
    x, geom = _setup(case)
    top_diff = np.random.default_rng(1).standard_normal(_top_shape(x, geom)).astype(np.float32)
    bottom = np.full_like(x, np.nan)  # the kernel zeroes it
    ave_pool_backward(top_diff, geom, bottom)
    np.testing.assert_allclose(bottom, ref_ave_backward(top_diff, geom, x.shape), rtol=1e-6, atol=1e-6)
    # AVE pooling is linear: backward is its adjoint.
    y = np.empty(top_diff.shape, np.float32)
    ave_pool_forward(x, geom, y)
    assert np.vdot(y.astype(np.float64), top_diff) == pytest.approx(
        np.vdot(x.astype(np.float64), bottom), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("case", ["random", "odd_7x5_s2_p1", "overlapping", "cifar_pool_3x3_s2", "lenet_pool"])
def test_ave_pool_sums_in_caffe_order(case):
    """float32 sums in row-major order, then one division: the same bits as Caffe (the 3x3 kernels
    write the window out by hand, so the order is checked exactly here, not to a tolerance)."""
    x, geom = _setup(case)
    y = np.empty(_top_shape(x, geom), np.float32)
    ave_pool_forward(x, geom, y)
    top_diff = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    bottom = np.empty_like(x)
    ave_pool_backward(top_diff, geom, bottom)
    y_ref = np.empty_like(y)
    bottom_ref = np.zeros_like(x)
    for n, c in np.ndindex(x.shape[:2]):
        for oh, ow, h0, h1, w0, w1, size in _windows(geom):
            acc = np.float32(0)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    acc = np.float32(acc + x[n, c, h, w])
            y_ref[n, c, oh, ow] = acc / np.float32(size)
            g = np.float32(top_diff[n, c, oh, ow] / np.float32(size))
            bottom_ref[n, c, h0:h1, w0:w1] += g
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(bottom, bottom_ref)


def test_ave_pool_padding_counts_in_the_divisor():
    geom = make_pool_geom(2, 2, 2, 2, 2, 2, 1, 1)  # OH = OW = 2; each window holds 1 pixel
    x = np.full((1, 1, 2, 2), 4, np.float32)
    y = np.empty((1, 1, 2, 2), np.float32)
    ave_pool_forward(x, geom, y)
    np.testing.assert_array_equal(y, np.ones_like(y))  # 4 / 4, not 4 / 1


@pytest.mark.parametrize(
    "size, k, pad, stride, any_pad, expected",
    [
        (24, 2, 0, 2, None, 12),  # LeNet pool1
        (8, 2, 0, 2, None, 4),  # LeNet pool2
        (55, 3, 0, 2, None, 27),  # AlexNet pool1
        (112, 3, 0, 2, None, 56),  # GoogLeNet pool1 (ceil)
        (7, 3, 1, 2, None, 4),
        (4, 3, 2, 3, None, 2),  # ceil -> 3; last window starts at 6 >= 4 + 2: dropped
        (5, 1, 0, 3, None, 3),  # no padding: no correction (last window is empty)
        (5, 1, 0, 3, True, 2),  # padded along the other axis: corrected (Caffe: pad_h || pad_w)
        (6, 6, 0, 1, None, 1),  # global
        (1, 2, 1, 1, None, 2),
    ],
)
def test_pool_out_size(size, k, pad, stride, any_pad, expected):
    assert pool_out_size(size, k, pad, stride, any_pad) == expected


def test_make_pool_geom_layout_and_validation():
    g = make_pool_geom(24, 20, 2, 3, 2, 1, 0, 1)
    assert g.dtype == np.int64
    assert g.tolist() == [24, 20, 2, 3, 2, 1, 0, 1, 12, 20]
    with pytest.raises(ValueError, match="pad < kernel"):
        make_pool_geom(4, 4, 2, 2, 1, 1, 2, 0)
    with pytest.raises(ValueError, match=">= 1"):
        make_pool_geom(4, 4, 2, 2, 0, 1)


@pytest.mark.parametrize("H,W,s", [(24, 24, 2), (7, 9, 2), (5, 6, 1), (8, 8, 3), (1, 5, 2), (2, 2, 2)])
def test_max_pool_2x2_matches_the_general_kernel(H, W, s):
    from pycaffe_lite.kernels.pooling import max_pool_forward_2x2

    rng = np.random.default_rng(H * W + s)
    x = rng.integers(-3, 4, size=(3, 4, H, W)).astype(np.float32)  # many ties: the first maximum wins
    x[0, 0, 0, 0] = np.nan
    geom = make_pool_geom(H, W, 2, 2, s, s, 0, 0)
    OH, OW = int(geom[8]), int(geom[9])
    want_y, want_m = np.empty((3, 4, OH, OW), np.float32), np.empty((3, 4, OH, OW), np.int16)
    got_y, got_m = np.full_like(want_y, 99), np.full_like(want_m, 99)
    max_pool_forward(x, geom, want_y, want_m)
    max_pool_forward_2x2(x, geom, got_y, got_m)
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_array_equal(got_m, want_m)

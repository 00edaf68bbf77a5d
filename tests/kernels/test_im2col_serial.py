"""The serial (one-thread, GIL-free) im2col kernels against the parallel ones and the NumPy
references of test_im2col: the same bits, on random, odd and size-1 shapes.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (the last test does that in a subprocess).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from pycaffe_lite.kernels.im2col import (
    col2im_batch,
    col2im_serial,
    im2col_batch,
    im2col_serial,
    im2row_nhwc,
    im2row_nhwc_serial,
    row2im_nhwc,
    row2im_nhwc_serial,
)
from tests.conftest import ROOT
from tests.kernels.test_im2col import CASES, _setup, ref_col2im, ref_im2col

# more images than a col2im block (8), so the serial loop's blocks are exercised
CASES_HERE = [*CASES, "many_images"]


def _case(case):
    if case == "many_images":
        from pycaffe_lite.kernels.im2col import make_geom

        geom = make_geom(3, 5, 6, 3, 2, 1, 2, 1, 0, 1, 1)
        x = np.random.default_rng(1).standard_normal((11, 3, 5, 6)).astype(np.float32)
        return x, geom
    return _setup(case)


@pytest.mark.parametrize("case", CASES_HERE)
def test_im2col_and_col2im_serial_equal_parallel(case):
    x, geom = _case(case)
    N = x.shape[0]
    K, P = int(geom[0] * geom[3] * geom[4]), int(geom[11] * geom[12])
    par, ser = np.full((K, N * P), np.nan, np.float32), np.full((K, N * P), np.nan, np.float32)
    im2col_batch(x, geom, par)
    im2col_serial(x, geom, ser)
    np.testing.assert_array_equal(ser, par)
    np.testing.assert_array_equal(ser, ref_im2col(x, geom))
    col = np.random.default_rng(2).standard_normal((K, N * P)).astype(np.float32)
    dx_par, dx_ser = np.full_like(x, np.nan), np.full_like(x, np.nan)
    col2im_batch(col, geom, dx_par)
    col2im_serial(col, geom, dx_ser)
    np.testing.assert_array_equal(dx_ser, dx_par)
    np.testing.assert_allclose(dx_ser, ref_col2im(col, geom, N), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES_HERE)
def test_nhwc_rows_serial_equal_parallel(case):
    x, geom = _case(case)
    N = x.shape[0]
    K, P = int(geom[0] * geom[3] * geom[4]), int(geom[11] * geom[12])
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    par, ser = np.full((N * P, K), np.nan, np.float32), np.full((N * P, K), np.nan, np.float32)
    im2row_nhwc(xh, geom, par)
    im2row_nhwc_serial(xh, geom, ser)
    np.testing.assert_array_equal(ser, par)
    # the same entries as the columns, reordered (c, i, j) -> (i, j, c)
    C, kh, kw = (int(v) for v in (geom[0], geom[3], geom[4]))
    col = ref_im2col(x, geom).reshape(C, kh * kw, N * P)
    np.testing.assert_array_equal(ser, col.transpose(2, 1, 0).reshape(N * P, K))
    rows = np.random.default_rng(3).standard_normal((N * P, K)).astype(np.float32)
    dxh_par, dxh_ser = np.full_like(xh, np.nan), np.full_like(xh, np.nan)
    row2im_nhwc(rows, geom, dxh_par)
    row2im_nhwc_serial(rows, geom, dxh_ser)
    np.testing.assert_array_equal(dxh_ser, dxh_par)
    col = rows.reshape(N * P, kh * kw, C).transpose(2, 1, 0).reshape(K, N * P)
    np.testing.assert_allclose(dxh_ser.transpose(0, 3, 1, 2), ref_col2im(col, geom, N), rtol=1e-5, atol=1e-5)


def test_serial_kernels_pass_without_jit():
    if os.environ.get("NUMBA_DISABLE_JIT") == "1":  # already the pure-Python run: the tests above are it
        return
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "not without_jit"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout

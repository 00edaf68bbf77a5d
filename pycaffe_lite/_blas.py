"""NumPy's own OpenBLAS ``sgemm``, callable from Numba kernels that hold no GIL.

The two-thread split of pycaffe_lite/_split.py hands a product to a worker thread that runs it
in a Numba loop (kernels/spin.py ``serve_gemm``), so the worker never waits for the GIL: each GIL
hand-off between two busy threads put one of them to sleep for 15-35 us, as long as a third of
the RBM layer's half-products.  NumPy's wheels bundle an ILP64 OpenBLAS (64-bit integer
arguments) whose C interface is exported as ``scipy_cblas_sgemm64_`` (``cblas_sgemm64_`` in
other OpenBLAS builds); it is found through threadpoolctl and checked on a small product before
use.  Where it is missing (another BLAS, no threadpoolctl, NUMBA_DISABLE_JIT=1) :func:`sgemm`
returns None and the callers use ``np.matmul``.
"""
from __future__ import annotations

import ctypes

import numpy as np
from numba import types

#: CBLAS's enum values (row-major order; no transpose / transpose).
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
_SYMBOLS = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
_I64, _PTR, _F32 = types.int64, types.uintp, types.float32
#: cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), ILP64
SIGNATURE = types.void(types.int32, types.int32, types.int32, _I64, _I64, _I64, _F32, _PTR, _I64,
                       _PTR, _I64, _F32, _PTR, _I64)


class _Sgemm(types.WrapperAddressProtocol):
    """A C function pointer Numba can take as an argument (a first-class function)."""

    def __init__(self, address: int, name: str, path: str) -> None:
        self.address, self.name, self.path = address, name, path

    def __wrapper_address__(self) -> int:
        return self.address

    def signature(self):
        return SIGNATURE


_SGEMM: _Sgemm | None | bool = False  # False: not looked up yet


def sgemm() -> _Sgemm | None:
    """NumPy's ILP64 ``cblas_sgemm`` as a Numba first-class function, or None (not found, or it
    failed the check)."""
    global _SGEMM
    if _SGEMM is False:
        from numba.core import config

        # without the JIT (NUMBA_DISABLE_JIT=1, for debugging) the kernels are plain Python and
        # cannot call C or hold no GIL
        _SGEMM = None if config.DISABLE_JIT else _find()
    return _SGEMM


def _find() -> _Sgemm | None:
    import numba.experimental.function_type  # noqa: F401 - registers typeof() for _Sgemm

    from ._threads import blas_libs

    for lib in blas_libs():
        if getattr(lib, "internal_api", "") != "openblas":
            continue
        try:
            handle = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        for name in _SYMBOLS:
            fn = getattr(handle, name, None)
            if fn is None:
                continue
            candidate = _Sgemm(ctypes.cast(fn, ctypes.c_void_p).value, name, lib.filepath)
            if _works(candidate):
                return candidate
    return None


def describe(a: np.ndarray, b: np.ndarray, out: np.ndarray, desc: np.ndarray) -> bool:
    """Fill ``desc`` (int64, >= 11 values) with the row-major sgemm arguments of
    ``out = a @ b`` (transA, transB, M, N, K, A, lda, B, ldb, C, ldc); False when a view is not
    something BLAS can take (not float32, no unit stride, empty)."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return False
    M, K = a.shape
    N = b.shape[1]
    if b.shape[0] != K or out.shape != (M, N) or min(M, N, K) < 1:
        return False
    if a.dtype != np.float32 or b.dtype != np.float32 or out.dtype != np.float32:
        return False
    ta, lda = _operand(a)
    tb, ldb = _operand(b)
    if ta == 0 or tb == 0 or out.strides[1] != 4 or out.strides[0] % 4 or out.strides[0] // 4 < N:
        return False
    desc[:11] = (ta, tb, M, N, K, a.ctypes.data, lda, b.ctypes.data, ldb, out.ctypes.data, out.strides[0] // 4)
    return True


def _operand(x: np.ndarray) -> tuple[int, int]:
    """(transpose flag, leading dimension) of a 2-D float32 view for row-major BLAS; (0, 0) if
    it has no unit stride."""
    rows, cols = x.shape
    s0, s1 = x.strides
    if s1 == 4 and s0 % 4 == 0 and (s0 // 4 >= cols or rows == 1):
        return NO_TRANS, max(s0 // 4, cols)
    if s0 == 4 and s1 % 4 == 0 and (s1 // 4 >= rows or cols == 1):
        return TRANS, max(s1 // 4, rows)  # a transposed view of a row-major (cols, rows) array
    return 0, 0


def _works(fn: _Sgemm) -> bool:
    """Run a small product through ``fn`` (both operand layouts) and compare it with NumPy's."""
    from .kernels.spin import call_gemm

    rs = np.random.default_rng(0)
    a = rs.random((5, 7), dtype=np.float32)
    b = rs.random((9, 7), dtype=np.float32)
    out = np.full((5, 9), np.nan, np.float32)
    desc = np.zeros(16, np.int64)
    if not describe(a, b.T, out, desc):
        return False
    try:
        call_gemm(fn, desc, np.array([1.0, 0.0], np.float32))
    except Exception:  # noqa: BLE001 - any failure means: do not use it
        return False
    if not np.allclose(out, a @ b.T, rtol=1e-5, atol=1e-6):
        return False
    acc = a @ b.T  # alpha and beta: out = 0.5 a b^T + 1 * out
    try:
        call_gemm(fn, desc, np.array([0.5, 1.0], np.float32))
    except Exception:  # noqa: BLE001
        return False
    return bool(np.allclose(out, 1.5 * acc, rtol=1e-5, atol=1e-6))

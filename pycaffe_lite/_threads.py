"""Thread settings that must be in place before NumPy and Numba are imported.

Numba's OpenMP threads and OpenBLAS's threads both spin while they wait; on a
2-core machine they fight and one LeNet iteration takes 4-5x longer (see
PERFORMANCE_NOTES).  Telling both to sleep when idle removes that.  A user's own
settings win: we only fill in what is unset.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

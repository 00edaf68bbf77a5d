"""The kernels are plain Python under NUMBA_DISABLE_JIT=1 (for debugging): same tests, same results."""
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_kernel_tests_pass_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    files = ["tests/kernels/test_im2col.py", "tests/kernels/test_pooling.py", "tests/solvers/test_solver_kernels.py",
             "tests/kernels/test_sampling.py", "tests/kernels/test_stochastic_pooling.py", "tests/kernels/test_neuron.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout

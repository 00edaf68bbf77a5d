"""The thread settings that avoid the 4-5x spinning trap are in place before NumPy/Numba load.

(Measured on 2 cores: 500 LeNet iterations took 7.5x longer with spinning OpenMP/OpenBLAS
threads; see the closing note of issue 2.)
"""
import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = (
    "import os, sys\n"
    "import pycaffe_lite.cli\n"
    "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n"
)


def run(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout


def test_defaults_make_idle_threads_sleep():
    assert run({}).split() == ["passive", "4"]


def test_user_settings_win():
    assert run({"OMP_WAIT_POLICY": "active"}).split() == ["active", "4"]


def test_set_before_numpy_is_imported():
    from pathlib import Path

    import pycaffe_lite._threads as t

    source = Path(t.__file__).read_text()
    assert "import numpy" not in source
    first = (Path(t.__file__).parent / "__init__.py").read_text()
    assert first.index("_threads") < first.index("from .blob")

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


# ------------------------------------------------------------------ the busy-machine guard
def _blas_threads():
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]


class _Lines(list):
    """Records of the pycaffe_lite logger, whatever its handlers and propagation."""

    def __enter__(self):
        import logging

        self.handler = logging.Handler(logging.INFO)
        self.handler.emit = lambda record: self.append(record.getMessage())
        self.logger = logging.getLogger("pycaffe_lite")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)

    @property
    def text(self):
        return "\n".join(self)


def test_busy_guard_limits_blas_when_busy_and_restores_when_quiet(monkeypatch):
    import numpy  # noqa: F401  (BLAS loaded, so threadpoolctl sees it)

    from pycaffe_lite._threads import BusyMachineGuard

    monkeypatch.setenv("PLITE_ADAPT_THREADS", "1")
    # 2 CPUs: busy above 2.75, quiet below 1.75, two looks in a row either way
    loads = iter([3.0, 2.5, 3.0, 3.0, 1.5, 2.0, 1.5, 1.0])
    guard = BusyMachineGuard(every=2, cpus=2, load=lambda: next(loads))
    before = _blas_threads()

    def looks(n):
        for _ in range(2 * n):
            guard.tick()

    with _Lines() as lines:
        looks(2)                       # 3.0 then 2.5: one busy look is not enough
        assert not guard.limited
        looks(2)                       # 3.0, 3.0 -> one thread
        assert guard.limited and set(_blas_threads()) == {1}
        assert "Machine busy (load 3.00 on 2 CPUs)" in lines.text
        looks(2)                       # 1.5 then 2.0: still limited
        assert guard.limited
        looks(2)                       # 1.5, 1.0 -> restored
        assert not guard.limited and _blas_threads() == before
        assert "BLAS threads restored" in lines.text


def test_busy_guard_close_restores_and_env_turns_it_off(monkeypatch):
    import numpy  # noqa: F401

    from pycaffe_lite._threads import BusyMachineGuard

    monkeypatch.setenv("PLITE_ADAPT_THREADS", "1")
    before = _blas_threads()
    guard = BusyMachineGuard(every=1, cpus=2, load=lambda: 9.0)
    guard.tick()
    guard.tick()
    assert guard.limited
    guard.close()
    assert not guard.limited and _blas_threads() == before
    monkeypatch.setenv("PLITE_ADAPT_THREADS", "0")
    off = BusyMachineGuard(every=1, cpus=2, load=lambda: 9.0)
    off.tick()
    off.tick()
    assert not off.enabled and not off.limited
    assert not BusyMachineGuard(every=1, cpus=1, load=lambda: 9.0).enabled  # one CPU: nothing to do


def test_solver_ticks_the_guard(monkeypatch, mnist_small):
    from pycaffe_lite.solvers import get_solver

    net = (f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
           f'source: "{mnist_small / "mnist_train_lmdb"}" batch_size: 8 backend: LMDB }} '
           f'transform_param {{ scale: 0.00390625 }} }} '
           f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
           f'inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }} '
           f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}')
    solver = get_solver(f'net_param {{ {net} }} base_lr: 0.01 lr_policy: "fixed" max_iter: 5 display: 0 '
                        f'snapshot_after_train: false')
    solver.solve()
    assert solver.busy_guard is not None and solver.busy_guard._calls == 5

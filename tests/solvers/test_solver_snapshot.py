"""Snapshots: file names, the binary SolverState (history order, current_step), the .rng
sidecar, atomic writes, restore -> continue == uninterrupted, and clear errors."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, SolverConfigError
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import get_solver

from .solver_fakes import FakeNet, solver_param

BASE = 'base_lr: 0.05 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 weight_decay: 0.01 max_iter: 6 '


def make(tmp_path, rule="Adam", extra=""):
    p = solver_param(BASE + f'type: "{rule}" momentum: 0.9 snapshot_prefix: "{tmp_path}/snap" {extra}')
    net = FakeNet()
    return get_solver(p, train_net=net), net


@pytest.mark.parametrize("rule", ["SGD", "Adam", "AdaDelta"])
def test_solverstate_round_trip(tmp_path, rule):
    solver, net = make(tmp_path, rule)
    solver.step(3)
    model, state_path = solver.snapshot()
    assert model == f"{tmp_path}/snap_iter_3.caffemodel"
    assert state_path == f"{tmp_path}/snap_iter_3.solverstate"
    assert sorted(os.listdir(tmp_path)) == ["snap_iter_3.caffemodel", "snap_iter_3.solverstate",
                                            "snap_iter_3.solverstate.rng"]  # no temp files left
    state = caffe_pb2.SolverState()
    state.ParseFromString(Path(state_path).read_bytes())
    assert state.iter == 3 and state.learned_net == model and state.current_step == 1
    n = len(net.learnable_params)
    assert len(state.history) == n * solver.num_history_sets
    for h, bp in zip(solver.history, state.history):  # first moments of every param, then second
        assert tuple(bp.shape.dim) == h.shape
        assert np.array_equal(np.asarray(bp.data, np.float32).reshape(h.shape), h.data)
    assert json.loads(Path(state_path + ".rng").read_text())["iter"] == 3

    other, other_net = make(tmp_path, rule)
    other.restore(state_path)
    assert other.iter == 3 and other.current_step == 1 and other.last_snapshot == state_path
    for a, b in zip(solver.history, other.history):
        assert np.array_equal(a.data, b.data)
    for a, b in zip(net.learnable_params, other_net.learnable_params):
        assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("rule", ["Nesterov", "Adam"])
def test_resume_equals_uninterrupted(tmp_path, rule):
    full, full_net = make(tmp_path / "a", rule)
    full.step(6)
    half, _ = make(tmp_path / "b", rule)
    half.step(3)
    _, state_path = half.snapshot()
    resumed, resumed_net = make(tmp_path / "c", rule)
    resumed.restore(state_path)
    resumed.step(3)
    for a, b in zip(full_net.learnable_params, resumed_net.learnable_params):
        assert np.array_equal(a.data, b.data)
    for a, b in zip(full.history, resumed.history):
        assert np.array_equal(a.data, b.data)


def test_periodic_snapshots_and_snapshot_after_train(tmp_path):
    solver, _ = make(tmp_path, "SGD", "snapshot: 4")
    solver.solve()
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".solverstate"))
    assert names == ["snap_iter_4.solverstate", "snap_iter_6.solverstate"]


def test_missing_and_corrupt_solverstate(tmp_path):
    solver, _ = make(tmp_path)
    missing = tmp_path / "nothing.solverstate"
    with pytest.raises(DataError, match="nothing.solverstate"):
        solver.restore(str(missing))
    bad = tmp_path / "bad.solverstate"
    bad.write_bytes(b"\xff\xff\xff\xff garbage")
    with pytest.raises(DataError, match="bad.solverstate"):
        solver.restore(str(bad))
    with pytest.raises(SolverConfigError, match="HDF5"):
        solver.restore(str(tmp_path / "x.solverstate.h5"))


def test_history_mismatch_names_the_file(tmp_path):
    sgd, _ = make(tmp_path, "SGD")
    sgd.step(1)
    _, state_path = sgd.snapshot()
    adam, _ = make(tmp_path, "Adam")
    with pytest.raises(DataError, match=r"snap_iter_1.solverstate: 2 history blobs.*keeps 4"):
        adam.restore(state_path)


def test_missing_learned_net_and_sidecar(tmp_path, caplog):
    solver, _ = make(tmp_path, "SGD")
    solver.step(1)
    model, state_path = solver.snapshot()
    os.remove(state_path + ".rng")
    other, _ = make(tmp_path, "SGD")
    other.restore(state_path)  # still works, with a warning
    assert other.iter == 1
    os.remove(model)
    with pytest.raises(DataError, match="learned_net"):
        other.restore(state_path)


def test_corrupt_sidecar(tmp_path):
    solver, _ = make(tmp_path, "SGD")
    solver.step(1)
    _, state_path = solver.snapshot()
    with open(state_path + ".rng", "w") as f:
        f.write("{not json")
    with pytest.raises(DataError, match=r"\.rng"):
        make(tmp_path, "SGD")[0].restore(state_path)


def test_interrupt_snapshots_and_stops(tmp_path):
    solver, _ = make(tmp_path, "SGD")
    seen = []

    def progress(it, max_iter, loss):
        seen.append((it, max_iter))
        if it == 2:
            solver.request_stop()

    solver.progress = progress
    solver.solve()
    assert solver.interrupted and solver.iter == 2
    assert seen == [(1, 6), (2, 6)]
    assert os.path.exists(tmp_path / "snap_iter_2.solverstate")


def test_keyboard_interrupt_outside_update_snapshots(tmp_path):
    solver, net = make(tmp_path, "SGD")
    real = net.forward_backward

    def fb():
        if solver.iter == 3:
            raise KeyboardInterrupt
        return real()

    net.forward_backward = fb
    solver.solve()
    assert solver.interrupted and solver.iter == 3
    assert os.path.exists(tmp_path / "snap_iter_3.solverstate")


def test_divergence_names_the_last_good_snapshot(tmp_path):
    from pycaffe_lite.errors import TrainingDivergedError

    solver, net = make(tmp_path, "SGD", "snapshot: 1")
    real = net.forward_backward
    net.forward_backward = lambda: float("nan") if solver.iter == 3 else real()
    with pytest.raises(TrainingDivergedError) as e:
        solver.solve()
    # snap_iter_3 holds the weights that gave the NaN: the last good one is snap_iter_2
    assert "Iteration 3: loss is nan" in str(e.value)
    assert f"The last good snapshot is {tmp_path}/snap_iter_2.solverstate." in str(e.value)

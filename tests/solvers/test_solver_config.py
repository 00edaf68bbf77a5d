"""Solver set-up errors: every message names the solver file and what to change."""
import pytest

from pycaffe_lite.errors import SolverConfigError
from pycaffe_lite.solvers import get_solver

from .solver_fakes import FakeNet, solver_param


def test_no_train_net_names_the_file_and_fields(tmp_path):
    path = tmp_path / "my_solver.prototxt"
    path.write_text('base_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\n')
    with pytest.raises(SolverConfigError) as e:
        get_solver(str(path))
    msg = str(e.value)
    assert "my_solver.prototxt" in msg
    for field in ("net", "net_param", "train_net", "train_net_param"):
        assert field in msg


def test_two_train_nets_is_an_error(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('net: "a.prototxt" train_net: "b.prototxt" base_lr: 0.01 lr_policy: "fixed"')
    with pytest.raises(SolverConfigError, match="2 train nets"):
        get_solver(str(path))


@pytest.mark.parametrize("rule", ["AdaGrad", "RMSProp"])
def test_momentum_refused(rule):
    with pytest.raises(SolverConfigError, match=f"momentum cannot be used with {rule}"):
        get_solver(solver_param(f'type: "{rule}" base_lr: 0.01 lr_policy: "fixed" momentum: 0.9'),
                   train_net=FakeNet())


def test_rms_decay_range():
    with pytest.raises(SolverConfigError, match="rms_decay"):
        get_solver(solver_param('type: "RMSProp" base_lr: 0.01 lr_policy: "fixed" rms_decay: 1'),
                   train_net=FakeNet())


@pytest.mark.parametrize("text, pattern", [
    ('regularization_type: "L3"', "unknown regularization_type 'L3'"),
    ("snapshot_format: HDF5", "only BINARYPROTO"),
    ('type: "Adamax"', "unknown solver type 'Adamax'.*Adam"),
    ("iter_size: 0", "iter_size"),
    ("average_loss: 0", "average_loss"),
    ("snapshot: 10", "snapshot_prefix"),
    ('snapshot: 10 snapshot_prefix: "/proc/nonexistent/x"', "cannot write to snapshot_prefix"),
    ('solver_type: ADAM type: "SGD"', "disagree"),
])
def test_bad_settings(text, pattern):
    with pytest.raises(SolverConfigError, match=pattern):
        get_solver(solver_param(f'base_lr: 0.01 lr_policy: "fixed" {text}'), train_net=FakeNet())


def test_test_iter_must_match_test_nets(tmp_path):
    net = tmp_path / "n.prototxt"
    net.write_text('name: "n" layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }')
    p = solver_param(f'test_net: "{net}" test_net: "{net}" test_iter: 1 test_interval: 5 '
                     'base_lr: 0.01 lr_policy: "fixed"')
    with pytest.raises(SolverConfigError, match="test_iter must be given once per test net"):
        get_solver(p, train_net=FakeNet())
    # test_interval 0 is valid in Caffe: the test net is built but never run
    p = solver_param(f'test_net: "{net}" test_iter: 1 base_lr: 0.01 lr_policy: "fixed"')
    assert len(get_solver(p, train_net=FakeNet()).test_nets) == 1


def test_errors_carry_the_field_line(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('base_lr: 0.01\nlr_policy: "fixed"\ntype: "AdaGrad"\nmomentum: 0.9\n')
    with pytest.raises(SolverConfigError, match=r"s\.prototxt:4: momentum cannot be used with AdaGrad"):
        get_solver(str(path), train_net=FakeNet())
    path.write_text('base_lr: 0.01\nlr_policy: "fixd"\n')
    with pytest.raises(SolverConfigError, match=r"s\.prototxt:2: unknown lr_policy 'fixd'"):
        get_solver(str(path), train_net=FakeNet())


def test_missing_net_file(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('net: "nowhere.prototxt" base_lr: 0.01 lr_policy: "fixed"')
    with pytest.raises(SolverConfigError, match="net: 'nowhere.prototxt' not found"):
        get_solver(str(path))

"""lr_policy "plateau", early stopping and the best snapshot, driven by scripted test outputs:
the rate divides at the right tests, training stops at the right iteration, the best snapshot
holds the best weights, resume takes the same decisions, and bad settings are refused."""
import logging
from collections import OrderedDict

import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import SolverConfigError
from pycaffe_lite.io.caffemodel import read_message
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.solvers import get_solver
from pycaffe_lite.solvers.lr_policy import learning_rate

from .solver_fakes import FakeNet, solver_param

# A real test net whose only output is a scalar named "accuracy" (swapped for a scripted one below).
TEST_NET = ('test_net_param { name: "scripted" layer { name: "d" type: "DummyData" top: "accuracy" '
            'top: "vec" dummy_data_param { shape { dim: 1 } shape { dim: 3 } } } } test_iter: 1 ')


class ScriptedTestNet:
    """Test net stand-in: its "accuracy" output at a test is ``script[solver.iter]``; it records the
    train net's weights at every test so that the best snapshot can be checked."""

    def __init__(self, solver, script: dict, name="accuracy"):
        self.solver, self.script, self.name_out = solver, script, name
        self.name = "scripted"
        self.outputs = [name]
        self.blobs = OrderedDict({name: Blob((1,), name=name)})
        self.blob_loss_weights = {}
        self.layers, self.layer_names = [], []
        self.weights_at: dict[int, list] = {}

    def share_trained_layers_with(self, net) -> None:
        pass

    def forward_loss(self) -> float:
        it = self.solver.iter
        self.blobs[self.name_out].data[...] = self.script[it]
        self.weights_at[it] = [b.data.copy() for b in self.solver.net.learnable_params]
        return 0.0


def make(text: str, script: dict, tmp_path=None):
    prefix = f'snapshot_prefix: "{tmp_path}/snap" ' if tmp_path is not None else ""
    solver = get_solver(solver_param(TEST_NET + prefix + text), train_net=FakeNet())
    scripted = ScriptedTestNet(solver, script)
    solver.test_nets[0] = scripted
    rates = []
    real = solver.get_learning_rate
    solver.get_learning_rate = lambda: rates.append(real()) or rates[-1]
    return solver, scripted, rates


@pytest.fixture
def logs(caplog):
    logger = logging.getLogger("pycaffe_lite")
    logger.addHandler(caplog.handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(old)


PLATEAU = ('base_lr: 1 lr_policy: "plateau" plateau_output: "accuracy" plateau_factor: 2 plateau_patience: 2 '
           'test_interval: 1 max_iter: 10 snapshot_best: false ')


def test_policy_formula():
    p = solver_param('base_lr: 0.1 lr_policy: "plateau" plateau_factor: 5 plateau_min_lr: 0.001')
    assert [learning_rate(p, 1000, k)[0] for k in range(4)] == pytest.approx([0.1, 0.02, 0.004, 0.001])
    assert learning_rate(p, 0, 2) == (pytest.approx(0.004), 2)  # the step is the solver's, not the iteration's


def test_rate_divides_after_patience_tests_without_improvement():
    # tests at iterations 0..10: best 0.1 (it 0), 0.2 (it 1); it 2 equal (wait 1), it 3 worse (wait 2:
    # divide -> 0.5); it 4 new best 0.3; it 5, 6 equal (wait 2: divide -> 0.25); it 7, 8 (-> 0.125); ...
    script = dict(enumerate([0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]))
    solver, _, rates = make(PLATEAU, script)
    solver.solve()
    assert rates == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125]
    assert solver.current_step == 4  # the final test (iteration 10) divides once more
    m = solver.monitor
    assert (m.best, m.best_iter, m.mode) == (pytest.approx(0.3), 4, "max")


def test_threshold_min_mode_and_min_lr():
    # MIN mode with threshold 0.05: 0.97 and 0.93 do not beat 1.0 by more than 0.05, 0.9 does.
    text = ('base_lr: 1 lr_policy: "plateau" plateau_output: "accuracy" plateau_mode: MIN plateau_factor: 10 '
            'plateau_patience: 1 plateau_threshold: 0.05 plateau_min_lr: 0.05 test_interval: 1 max_iter: 6 '
            'test_initialization: true snapshot_best: false ')
    script = dict(enumerate([1.0, 0.97, 0.9, 0.93, 0.95, 0.96, 0.96]))
    solver, _, rates = make(text, script)
    solver.solve()
    # it 1: no improvement -> 0.1; it 2: best; it 3: -> 0.01, clipped to min_lr 0.05; it 4: already at min
    assert rates == pytest.approx([1, 0.1, 0.1, 0.05, 0.05, 0.05])
    assert solver.current_step == 2
    assert solver.monitor.best_iter == 2


def test_early_stopping_stops_at_the_right_test_and_keeps_the_best_weights(tmp_path, logs):
    text = ('base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 plateau_output: "accuracy" early_stopping_patience: 3 '
            'test_interval: 2 max_iter: 20 ')
    # tests at 0, 2, 4, ...: best 0.5 at iteration 2; 4, 6 (equal is no improvement), 8 -> stop at 8
    script = {0: 0.1, 2: 0.5, 4: 0.4, 6: 0.5, 8: 0.45, 10: 0.9}
    solver, scripted, _ = make(text, script, tmp_path)
    solver.solve()
    assert solver.early_stopped and not solver.interrupted
    assert solver.iter == 8
    assert sorted(scripted.weights_at) == [0, 2, 4, 6, 8]  # no second test at 8 after stopping
    best = read_message(str(tmp_path / "snap_best.caffemodel"), caffe_pb2.NetParameter(), "caffemodel")
    for want, bp in zip(scripted.weights_at[2], best.layer[0].blobs):
        np.testing.assert_array_equal(np.asarray(bp.data, np.float32).reshape(want.shape), want)
    assert not np.array_equal(scripted.weights_at[2][0], scripted.weights_at[8][0])  # it did train on
    assert (tmp_path / "snap_iter_8.caffemodel").is_file()  # snapshot_after_train, as at max_iter
    text_log = logs.text
    assert "Early stopping at iteration 8: accuracy has not improved for 3 tests (best 0.5 at iteration 2)" \
        in text_log
    assert f"Best accuracy = 0.5 at iteration 2 (snapshot: {tmp_path}/snap_best.caffemodel)" in text_log


def test_resume_takes_the_same_decisions(tmp_path):
    text = ('base_lr: 0.1 lr_policy: "plateau" momentum: 0.9 plateau_output: "accuracy" plateau_factor: 5 '
            'plateau_patience: 2 early_stopping_patience: 4 test_interval: 1 max_iter: 30 snapshot: 3 ')
    script = dict(enumerate([0.1, 0.3, 0.2, 0.25, 0.35, 0.3, 0.3, 0.2, 0.36, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]))
    full, _, full_rates = make(text, script, tmp_path / "a")
    full.solve()
    assert full.early_stopped and full.iter == 12  # best 0.36 at 8; 9, 10, 11, 12 without improvement
    # resume from iteration 6: the saved monitor holds best 0.35 (it 4), 1 test without improvement
    state = caffe_pb2.SolverState()
    state.ParseFromString((tmp_path / "a" / "snap_iter_6.solverstate").read_bytes())
    assert state.current_step == 1 and state.plateau_state.best == pytest.approx(0.35)
    assert (state.plateau_state.best_iter, state.plateau_state.wait, state.plateau_state.tests_since_best) == (4, 1, 1)
    resumed, _, resumed_rates = make(text, script, tmp_path / "b")
    resumed.solve(str(tmp_path / "a" / "snap_iter_6.solverstate"))
    assert resumed.iter == 12 and resumed.early_stopped
    assert resumed_rates == full_rates[6:]
    assert resumed.current_step == full.current_step
    for a, b in zip(full.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    assert resumed.monitor.best_iter == 8
    assert resumed.monitor.best_snapshot == f"{tmp_path}/b/snap_best.caffemodel"


def test_a_repeated_test_at_the_same_iteration_is_not_counted_twice():
    solver, _, _ = make(PLATEAU, {0: 0.5, 1: 0.4})
    solver.test(0)
    solver.iter = 1
    solver.test(0)
    solver.test(0)  # e.g. a run resumed from the snapshot written right after the test at 1
    assert solver.monitor.wait == 1


def test_loss_outputs_are_minimised_on_a_real_net(tmp_path, logs):
    net = ('layer { name: "data" type: "DummyData" top: "x" top: "y" dummy_data_param { shape { dim: 4 dim: 3 } '
           'shape { dim: 4 dim: 2 } data_filler { type: "gaussian" std: 1 } } } '
           'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out" inner_product_param { num_output: 2 '
           'weight_filler { type: "gaussian" std: 0.1 } } } '
           'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }')
    p = solver_param(f'net_param {{ {net} }} test_iter: 1 test_interval: 2 base_lr: 0.01 lr_policy: "plateau" '
                     f'plateau_output: "loss" plateau_patience: 1 max_iter: 6 random_seed: 3 '
                     f'snapshot_prefix: "{tmp_path}/tiny"')
    solver = get_solver(p)
    assert solver.monitor.mode == "min"
    solver.solve()
    assert (tmp_path / "tiny_best.caffemodel").is_file()
    assert "Best loss = " in logs.text


@pytest.mark.parametrize("text, message", [
    ('lr_policy: "plateau" plateau_output: "accuracy" plateau_factor: 1', r"plateau_factor > 1 .*got 1\)"),
    ('lr_policy: "plateau" plateau_output: "accuracy" plateau_patience: 0', r"plateau_patience >= 1 .*got 0\)"),
    ('lr_policy: "plateau" plateau_output: "accuracy" plateau_min_lr: -1', r"plateau_min_lr >= 0 \(got -1\)"),
    ('lr_policy: "plateau"', r"lr_policy 'plateau' needs plateau_output: .*; test net #0 has outputs: accuracy, vec"),
    ('lr_policy: "fixed" early_stopping_patience: -2', "early_stopping_patience must be >= 0"),
    ('lr_policy: "fixed" early_stopping_patience: 2 plateau_output: "accuracy" plateau_factor: 0.1',
     r"plateau_factor must be > 1: the rate is divided by it .*write plateau_factor: 10"),
    ('lr_policy: "fixed" plateau_output: "accuracy" plateau_threshold: -0.1', "plateau_threshold must be >= 0"),
])
def test_bad_settings(text, message):
    with pytest.raises(SolverConfigError, match=message):
        get_solver(solver_param(TEST_NET + "base_lr: 1 test_interval: 1 " + text), train_net=FakeNet())


def test_errors_name_the_outputs_and_the_fix():
    with pytest.raises(SolverConfigError, match="lr_policy 'plateau' watches a test net output, but the solver has "
                       "no test net: add test_net"):
        get_solver(solver_param('base_lr: 1 lr_policy: "plateau" plateau_output: "accuracy"'), train_net=FakeNet())
    with pytest.raises(SolverConfigError, match="but test_interval is 0: set test_interval > 0"):
        get_solver(solver_param(TEST_NET + 'base_lr: 1 lr_policy: "fixed" early_stopping_patience: 2 '
                                'plateau_output: "accuracy"'), train_net=FakeNet())
    with pytest.raises(SolverConfigError, match=r"plateau_output 'acc' is not an output of test net #0 "
                       r"\('scripted'\); its outputs are: accuracy, vec"):
        get_solver(solver_param(TEST_NET + 'base_lr: 1 test_interval: 1 lr_policy: "plateau" plateau_output: "acc"'),
                   train_net=FakeNet())
    with pytest.raises(SolverConfigError, match="early_stopping_patience needs plateau_output: .* test net #0 has "
                       "outputs: accuracy, vec"):
        get_solver(solver_param(TEST_NET + 'base_lr: 1 test_interval: 1 lr_policy: "fixed" '
                                'early_stopping_patience: 2'), train_net=FakeNet())
    with pytest.raises(SolverConfigError, match="plateau_output 'vec' has 3 values; the monitor needs a scalar"):
        get_solver(solver_param(TEST_NET + 'base_lr: 1 test_interval: 1 lr_policy: "fixed" plateau_output: "vec" '
                                'plateau_mode: MAX'), train_net=FakeNet())
    with pytest.raises(SolverConfigError, match="plateau_test_net 1 is out of range: the solver has 1 test net"):
        get_solver(solver_param(TEST_NET + 'base_lr: 1 test_interval: 1 lr_policy: "fixed" plateau_output: "accuracy" '
                                'plateau_test_net: 1'), train_net=FakeNet())


def test_mode_must_be_given_when_the_name_does_not_tell():
    text = TEST_NET.replace('top: "accuracy"', 'top: "score"')
    with pytest.raises(SolverConfigError, match="cannot tell whether plateau_output 'score' should rise or fall: set "
                       "plateau_mode: MAX"):
        get_solver(solver_param(text + 'base_lr: 1 test_interval: 1 lr_policy: "plateau" plateau_output: "score"'),
                   train_net=FakeNet())


def test_restoring_a_solverstate_without_plateau_state_warns(tmp_path, logs):
    plain = get_solver(solver_param(f'base_lr: 0.1 lr_policy: "fixed" snapshot_prefix: "{tmp_path}/plain"'),
                       train_net=FakeNet())
    plain.step(2)
    _, state = plain.snapshot()
    solver, _, _ = make(PLATEAU, {}, tmp_path)
    solver.restore(state)
    assert solver.iter == 2 and solver.monitor.best is None
    assert "holds no plateau state" in logs.text and "the best accuracy is forgotten" in logs.text

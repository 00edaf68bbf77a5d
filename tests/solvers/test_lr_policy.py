"""Every lr_policy against its formula; lenet_solver's inv reference; multistep's current_step."""
import math

import numpy as np
import pytest

from pycaffe_lite.errors import SolverConfigError
from pycaffe_lite.solvers import get_solver
from pycaffe_lite.solvers.lr_policy import learning_rate

from .solver_fakes import FakeNet, solver_param

f32 = lambda x: float(np.float32(x))


def rate(text, it, step=0):
    return learning_rate(solver_param(text), it, step)


def test_lenet_inv_reference():
    r, _ = rate('base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 power: 0.75', 100)
    assert f"{r:.6g}" == "0.00992565"


@pytest.mark.parametrize("it", [0, 1, 37, 1000])
def test_formulas(it):
    b, g, pw = f32(0.01), f32(0.9), f32(0.75)
    assert rate('base_lr: 0.01 lr_policy: "fixed"', it)[0] == b
    r, step = rate('base_lr: 0.01 lr_policy: "step" gamma: 0.9 stepsize: 30', it)
    assert step == it // 30 and r == pytest.approx(b * g ** (it // 30), rel=1e-12)
    assert rate('base_lr: 0.01 lr_policy: "exp" gamma: 0.9', it)[0] == pytest.approx(b * g ** it, rel=1e-12)
    gi = f32(1e-4)
    assert rate('base_lr: 0.01 lr_policy: "inv" gamma: 0.0001 power: 0.75', it)[0] == pytest.approx(
        b * (1 + gi * it) ** -pw, rel=1e-12)
    assert rate('base_lr: 0.01 lr_policy: "poly" power: 0.75 max_iter: 1000', it)[0] == pytest.approx(
        b * (1 - it / 1000) ** pw, rel=1e-12)
    assert rate('base_lr: 0.01 lr_policy: "sigmoid" gamma: 0.9 stepsize: 30', it)[0] == pytest.approx(
        b / (1 + math.exp(-g * (it - 30))), rel=1e-12)


def test_multistep_advances_current_step_and_is_kept():
    p = solver_param('base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 3 stepvalue: 5')
    step, rates = 0, []
    for it in range(8):
        r, step = learning_rate(p, it, step)
        rates.append(r)
    assert rates == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25]
    assert step == 2
    # the solver keeps it in current_step
    solver = get_solver(solver_param('base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 2'),
                        train_net=FakeNet())
    solver.step(3)
    assert solver.current_step == 1


def test_unknown_and_bad_policies():
    with pytest.raises(SolverConfigError, match=r"unknown lr_policy 'stpe'.*Did you mean 'step'.*fixed.*multistep"):
        rate('base_lr: 1 lr_policy: "stpe"', 0)
    with pytest.raises(SolverConfigError, match="lr_policy is not set"):
        rate("base_lr: 1", 0)
    with pytest.raises(SolverConfigError, match="stepsize > 0"):
        rate('base_lr: 1 lr_policy: "step" gamma: 0.1', 0)
    with pytest.raises(SolverConfigError, match="max_iter"):
        rate('base_lr: 1 lr_policy: "poly" power: 1 max_iter: 10', 11)
    with pytest.raises(SolverConfigError, match="unknown lr_policy"):
        get_solver(solver_param('base_lr: 1 lr_policy: "cosine"'), train_net=FakeNet())

"""Each update rule against its formula written by hand (float64 NumPy), for one and several
steps, on a fake net with two parameters (lr_mult 1 and 2, decay_mult 1 and 0); weight
decay (L2, L1 with sign(0) = 0), gradient clipping and iter_size normalization."""
import numpy as np
import pytest

from pycaffe_lite.solvers import SOLVERS, get_solver

from .solver_fakes import FakeNet, reference_run, solver_param

RULES = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-6",
    "RMSProp": "rms_decay: 0.95 delta: 1e-6",
    "AdaDelta": "momentum: 0.95 delta: 1e-6",
    "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-8",
}


def make(rule: str, extra: str = "", **net_kw):
    net = FakeNet(**net_kw)
    p = solver_param(f'type: "{rule}" base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.01 '
                     f"{RULES[rule]} {extra}")
    return get_solver(p, train_net=net), net, p


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("steps", [1, 4])
def test_rule_matches_formula(rule, steps):
    solver, net, p = make(rule)
    start = FakeNet()  # same seed: the weights before training
    assert type(solver).type == rule
    solver.step(steps)
    assert solver.iter == steps
    ref_w, ref_h = reference_run(rule, start, p, steps)
    for b, r in zip(net.learnable_params, ref_w):
        np.testing.assert_allclose(b.data, r, rtol=2e-5, atol=1e-6)
    assert len(solver.history) == len(ref_h) == len(net.learnable_params) * solver.num_history_sets
    for h, r in zip(solver.history, ref_h):
        np.testing.assert_allclose(h.data, r, rtol=2e-5, atol=1e-6)


def test_registered_types_and_legacy_enum():
    assert set(RULES) <= set(SOLVERS.names())
    for enum_value, name in enumerate(["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]):
        p = solver_param(f'solver_type: {["SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA", "ADAM"][enum_value]} '
                         'base_lr: 0.1 lr_policy: "fixed"')
        assert type(get_solver(p, train_net=FakeNet())).type == name


def test_sgd_momentum_convention_by_hand():
    # v <- mu v + lr g ; w <- w - v : two steps written out for the first element
    net = FakeNet(decay_mult=(0.0, 0.0))
    w0, t = float(net.learnable_params[0].data.flat[0]), float(net.targets[0].flat[0])
    solver = get_solver(solver_param('base_lr: 0.5 lr_policy: "fixed" momentum: 0.5'), train_net=net)
    solver.step(2)
    v1 = 0.5 * (w0 - t)
    w1 = w0 - v1
    v2 = 0.5 * v1 + 0.5 * (w1 - t)
    assert net.learnable_params[0].data.flat[0] == pytest.approx(w1 - v2, rel=1e-6)


@pytest.mark.parametrize("reg", ["L2", "L1"])
def test_regularization(reg):
    net = FakeNet()
    net.learnable_params[0].data.flat[:3] = 0.0  # sign(0) = 0 for L1
    start = FakeNet()
    start.learnable_params[0].data.flat[:3] = 0.0
    p = solver_param(f'base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.5 regularization_type: "{reg}"')
    get_solver(p, train_net=net).step(3)
    ref_w, _ = reference_run("SGD", start, p, 3)
    for b, r in zip(net.learnable_params, ref_w):
        np.testing.assert_allclose(b.data, r, rtol=2e-5, atol=1e-6)


def test_l1_sign_zero_adds_nothing():
    net = FakeNet(decay_mult=(1.0, 1.0))
    solver = get_solver(solver_param('base_lr: 1 lr_policy: "fixed" weight_decay: 0.5 regularization_type: "L1"'),
                        train_net=net)
    b = net.learnable_params[0]
    b.data[...] = 0
    b.data.flat[0], b.data.flat[1] = 2.0, -3.0
    b.diff[...] = 0
    solver.regularize(0)
    assert b.diff.flat[0] == 0.5 and b.diff.flat[1] == -0.5
    assert not np.any(b.diff.flat[2:])


def test_decay_mult_zero_skips_decay():
    net = FakeNet()
    solver = get_solver(solver_param('base_lr: 1 lr_policy: "fixed" weight_decay: 10'), train_net=net)
    b = net.learnable_params[1]  # decay_mult 0
    b.diff[...] = 0
    solver.regularize(1)
    assert not np.any(b.diff)


def test_clip_gradients_uses_global_norm_before_decay():
    net = FakeNet()
    start = FakeNet()
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.3 clip_gradients: 0.5 momentum: 0.5')
    get_solver(p, train_net=net).step(3)
    ref_w, _ = reference_run("SGD", start, p, 3)
    for b, r in zip(net.learnable_params, ref_w):
        np.testing.assert_allclose(b.data, r, rtol=2e-5, atol=1e-6)


def test_clip_gradients_scales_all_diffs():
    net = FakeNet()
    solver = get_solver(solver_param('base_lr: 1 lr_policy: "fixed" clip_gradients: 1'), train_net=net)
    for b in net.learnable_params:
        b.diff[...] = 3.0
    n = sum(b.count() for b in net.learnable_params)
    solver.clip_gradients()
    norm = np.sqrt(sum(np.sum(b.diff.astype(np.float64) ** 2) for b in net.learnable_params))
    assert norm == pytest.approx(1.0, rel=1e-6)
    assert net.learnable_params[0].diff.flat[0] == pytest.approx(3.0 / np.sqrt(9.0 * n), rel=1e-6)
    # below the threshold nothing changes
    for b in net.learnable_params:
        b.diff[...] = 0.01
    solver.clip_gradients()
    assert net.learnable_params[1].diff.flat[0] == np.float32(0.01)


def test_iter_size_accumulates_and_normalizes():
    net = FakeNet(scales=(1.0, 3.0))
    start = FakeNet(scales=(1.0, 3.0))
    p = solver_param('base_lr: 0.1 lr_policy: "fixed" weight_decay: 0.01 momentum: 0.9 iter_size: 2')
    solver = get_solver(p, train_net=net)
    solver.step(3)
    assert net.passes == 6
    ref_w, _ = reference_run("SGD", start, p, 3)
    for b, r in zip(net.learnable_params, ref_w):
        np.testing.assert_allclose(b.data, r, rtol=2e-5, atol=1e-6)


def test_apply_update_order_is_caffes():
    calls = []
    net = FakeNet()
    solver = get_solver(solver_param('base_lr: 1 lr_policy: "fixed"'), train_net=net)
    solver.clip_gradients = lambda: calls.append("clip")
    solver.normalize = lambda i: calls.append(f"normalize{i}")
    solver.regularize = lambda i: calls.append(f"regularize{i}")
    solver.compute_update_value = lambda i, r: calls.append(f"update{i}")
    net.update = lambda: calls.append("net.update")
    solver.apply_update()
    assert calls == ["clip", "normalize0", "regularize0", "update0", "normalize1", "regularize1", "update1",
                     "net.update"]

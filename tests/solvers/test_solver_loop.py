"""The iteration loop: callbacks, progress hook, smoothed loss over average_loss."""
import numpy as np
import pytest

from pycaffe_lite.solvers import get_solver

from .solver_fakes import FakeNet, solver_param


def test_callbacks_and_progress_order():
    events = []

    class Callback:
        def on_start(self):
            events.append(("start", solver.iter))

        def on_gradients_ready(self):
            events.append(("grads", solver.iter, float(np.abs(net.learnable_params[0].diff).sum()) > 0))

    net = FakeNet()
    solver = get_solver(solver_param('base_lr: 0.1 lr_policy: "fixed" max_iter: 2'), train_net=net,
                        progress=lambda it, mx, loss: events.append(("progress", it, mx)))
    solver.callbacks.append(Callback())
    solver.step(2)
    assert events == [("start", 0), ("grads", 0, True), ("progress", 1, 2),
                      ("start", 1), ("grads", 1, True), ("progress", 2, 2)]


@pytest.mark.parametrize("average_loss", [1, 3])
def test_smoothed_loss_is_mean_of_last_losses(average_loss):
    net = FakeNet()
    losses = []
    real = net.forward_backward

    def fb():
        losses.append(real())
        return losses[-1]

    net.forward_backward = fb
    solver = get_solver(solver_param(f'base_lr: 0.1 lr_policy: "fixed" average_loss: {average_loss}'),
                        train_net=net)
    solver.step(5)
    assert solver.smoothed_loss == pytest.approx(np.mean(losses[-average_loss:]), rel=1e-5)


def test_step_continues_from_current_iter():
    net = FakeNet()
    solver = get_solver(solver_param('base_lr: 0.1 lr_policy: "fixed"'), train_net=net)
    solver.step(2)
    solver.step(3)
    assert solver.iter == 5 and net.passes == 5

"""Stochastic gradient descent with momentum (Caffe's ``SGD``)."""
from __future__ import annotations

import numpy as np

from ..kernels.solver_updates import sgd_update
from ..registry import register_solver
from .solver import Solver, _flat


@register_solver("SGD", legacy="SGD")
class SGDSolver(Solver):
    """SGD with momentum, in Caffe's convention (the learning rate lives inside the momentum buffer).

    For each parameter ``w`` with gradient ``g`` (after clipping, normalization and weight
    decay) and ``lr = rate * lr_mult``::

        v <- momentum * v + lr * g
        w <- w - v

    History: one blob ``v`` per parameter.  The other SGD-family solvers subclass this one
    (as in Caffe) and override only :meth:`compute_update_value` and their history set-up.
    """

    def compute_update_value(self, param_id: int, rate: float) -> None:
        b = self.net.learnable_params[param_id]
        sgd_update(_flat(b.diff), _flat(self.history[param_id].data),
                   np.float32(self.param.momentum), np.float32(self.local_rate(param_id, rate)))

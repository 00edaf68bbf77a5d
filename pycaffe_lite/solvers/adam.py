"""Adam (Caffe's ``Adam``)."""
from __future__ import annotations

import math

import numpy as np

from ..kernels.solver_updates import adam_update
from ..registry import register_solver
from .sgd import SGDSolver
from .solver import _flat


@register_solver("Adam", legacy="ADAM")
class AdamSolver(SGDSolver):
    """Adam: bias-corrected running means of the gradient and its square.

    With ``lr = rate * lr_mult``, ``b1 = momentum``, ``b2 = momentum2``, ``t = iter + 1``::

        m <- b1 * m + (1 - b1) * g
        v <- b2 * v + (1 - b2) * g^2
        w <- w - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta)

    History: two sets, ``m`` for every parameter, then ``v`` for every parameter -- the order
    of the solverstate.  Kingma and Ba, "Adam: A Method for Stochastic Optimization",
    ICLR 2015 (arXiv:1412.6980).
    """

    num_history_sets = 2

    def compute_update_value(self, param_id: int, rate: float) -> None:
        n = len(self.net.learnable_params)
        b = self.net.learnable_params[param_id]
        beta1, beta2 = self.param.momentum, self.param.momentum2
        t = self.iter + 1
        correction = math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        adam_update(_flat(b.diff), _flat(self.history[param_id].data), _flat(self.history[n + param_id].data),
                    np.float32(beta1), np.float32(beta2), np.float32(self.param.delta),
                    np.float32(self.local_rate(param_id, rate) * correction))

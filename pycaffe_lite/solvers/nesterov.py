"""Nesterov's accelerated gradient (Caffe's ``Nesterov``)."""
from __future__ import annotations

import numpy as np

from ..kernels.solver_updates import nesterov_update
from ..registry import register_solver
from .sgd import SGDSolver
from .solver import _flat


@register_solver("Nesterov", legacy="NESTEROV")
class NesterovSolver(SGDSolver):
    """Nesterov momentum, in Caffe's convention (v <- mu v + lr g; w <- w - step).

    With ``lr = rate * lr_mult`` and ``mu = momentum``::

        v_new <- mu * v + lr * g
        w     <- w - ((1 + mu) * v_new - mu * v)

    History: one blob ``v`` per parameter.  Sutskever et al., "On the importance of
    initialization and momentum in deep learning", ICML 2013.
    """

    def compute_update_value(self, param_id: int, rate: float) -> None:
        b = self.net.learnable_params[param_id]
        nesterov_update(_flat(b.diff), _flat(self.history[param_id].data),
                        np.float32(self.param.momentum), np.float32(self.local_rate(param_id, rate)))

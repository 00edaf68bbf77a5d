"""AdaDelta (Caffe's ``AdaDelta``)."""
from __future__ import annotations

import numpy as np

from ..kernels.solver_updates import adadelta_update
from ..registry import register_solver
from .sgd import SGDSolver
from .solver import _flat


@register_solver("AdaDelta", legacy="ADADELTA")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta: the step is scaled by the ratio of running RMS of past updates and gradients.

    With ``lr = rate * lr_mult`` and decay ``m = momentum``::

        h1 <- m * h1 + (1 - m) * g^2
        u  <- g * sqrt((h2 + delta) / (h1 + delta))
        h2 <- m * h2 + (1 - m) * u^2
        w  <- w - lr * u

    History: two sets, ``h1`` (squared gradients) for every parameter, then ``h2`` (squared
    updates) for every parameter -- the order of the solverstate.  Zeiler, "ADADELTA: An
    Adaptive Learning Rate Method", arXiv:1212.5701, 2012.
    """

    num_history_sets = 2

    def compute_update_value(self, param_id: int, rate: float) -> None:
        n = len(self.net.learnable_params)
        b = self.net.learnable_params[param_id]
        adadelta_update(_flat(b.diff), _flat(self.history[param_id].data), _flat(self.history[n + param_id].data),
                        np.float32(self.param.momentum), np.float32(self.param.delta),
                        np.float32(self.local_rate(param_id, rate)))

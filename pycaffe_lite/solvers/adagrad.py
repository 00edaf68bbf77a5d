"""AdaGrad (Caffe's ``AdaGrad``)."""
from __future__ import annotations

import numpy as np

from ..kernels.solver_updates import adagrad_update
from ..registry import register_solver
from .sgd import SGDSolver
from .solver import _flat


@register_solver("AdaGrad", legacy="ADAGRAD")
class AdaGradSolver(SGDSolver):
    """AdaGrad: per-element rates shrinking with the sum of squared gradients.

    With ``lr = rate * lr_mult``::

        h <- h + g^2
        w <- w - lr * g / (sqrt(h) + delta)

    History: one blob ``h`` per parameter.  ``momentum`` must be 0.  Duchi, Hazan and
    Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 2011.
    """

    def check_param(self) -> None:
        if self.param.momentum != 0:
            raise self._err(f"momentum cannot be used with AdaGrad (got momentum: {self.param.momentum}); "
                            "remove it or set it to 0", "momentum")

    def compute_update_value(self, param_id: int, rate: float) -> None:
        b = self.net.learnable_params[param_id]
        adagrad_update(_flat(b.diff), _flat(self.history[param_id].data),
                       np.float32(self.param.delta), np.float32(self.local_rate(param_id, rate)))

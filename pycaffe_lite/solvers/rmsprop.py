"""RMSProp (Caffe's ``RMSProp``)."""
from __future__ import annotations

import numpy as np

from ..kernels.solver_updates import rmsprop_update
from ..registry import register_solver
from .sgd import SGDSolver
from .solver import _flat


@register_solver("RMSProp", legacy="RMSPROP")
class RMSPropSolver(SGDSolver):
    """RMSProp: rates divided by a running RMS of the gradient.

    With ``lr = rate * lr_mult`` and ``d = rms_decay``::

        h <- d * h + (1 - d) * g^2
        w <- w - lr * g / (sqrt(h) + delta)

    History: one blob ``h`` per parameter.  ``momentum`` must be 0 and ``0 <= rms_decay < 1``.
    Tieleman and Hinton, COURSERA: Neural Networks for Machine Learning, lecture 6.5, 2012.
    """

    def check_param(self) -> None:
        if self.param.momentum != 0:
            raise self._err(f"momentum cannot be used with RMSProp (got momentum: {self.param.momentum}); "
                            "remove it or set it to 0", "momentum")
        if not 0 <= self.param.rms_decay < 1:
            raise self._err(f"rms_decay must lie in [0, 1) (got {self.param.rms_decay})", "rms_decay")

    def compute_update_value(self, param_id: int, rate: float) -> None:
        b = self.net.learnable_params[param_id]
        rmsprop_update(_flat(b.diff), _flat(self.history[param_id].data), np.float32(self.param.rms_decay),
                       np.float32(self.param.delta), np.float32(self.local_rate(param_id, rate)))

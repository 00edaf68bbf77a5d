"""Solvers: Caffe's Solver/SGDSolver hierarchy.

``get_solver(path_or_param)`` builds the solver its ``type`` names (``SGD``, ``Nesterov``,
``AdaGrad``, ``RMSProp``, ``AdaDelta``, ``Adam``; the legacy ``solver_type`` enum works too).
"""
from __future__ import annotations

from ..errors import SolverConfigError
from ..registry import SOLVERS
from . import lr_policy  # noqa: F401  (registers the policies)
from .adadelta import AdaDeltaSolver
from .adagrad import AdaGradSolver
from .adam import AdamSolver
from .nesterov import NesterovSolver
from .rmsprop import RMSPropSolver
from .sgd import SGDSolver
from .solver import Solver, _Source, load_solver_param

__all__ = [
    "SOLVERS",
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "NesterovSolver",
    "RMSPropSolver",
    "SGDSolver",
    "Solver",
    "get_solver",
]


def get_solver(path_or_param, **kwargs) -> Solver:
    """Build the solver class that ``type`` names, from a solver prototxt path or text, a
    ``caffe.SolverParameter`` or a ParsedSolver.  ``kwargs`` go to :class:`Solver`."""
    from ..errors import where

    param, filename, lines = load_solver_param(path_or_param, with_lines=True)
    if param.type not in SOLVERS:
        raise SolverConfigError(
            f"{where(filename, lines.get('type'))}unknown solver type '{param.type}'. Known solver types: "
            f"{', '.join(SOLVERS.names())}"
        )
    return SOLVERS.get(param.type)(_Source(param, filename, lines), **kwargs)

"""Learning-rate policies: a table of small functions, one per ``lr_policy`` string.

Each policy is ``policy(param, iter, current_step) -> (rate, current_step)`` where ``param``
is the ``caffe.SolverParameter``, ``iter`` the number of updates done so far and
``current_step`` the solver's step counter (only ``step`` and ``multistep`` change it;
it is saved in the solverstate).  Rates are computed in Python floats (double) from the
float32 values the proto holds.  Bad settings raise :class:`SolverConfigError`.

========== =====================================================
fixed      ``base_lr``
step       ``base_lr * gamma ^ floor(iter / stepsize)``
exp        ``base_lr * gamma ^ iter``
inv        ``base_lr * (1 + gamma * iter) ^ (-power)``
multistep  ``base_lr * gamma ^ (number of stepvalues passed)``
poly       ``base_lr * (1 - iter / max_iter) ^ power``
sigmoid    ``base_lr / (1 + exp(-gamma * (iter - stepsize)))``
plateau    ``max(base_lr / plateau_factor ^ current_step, plateau_min_lr)`` (extension)
========== =====================================================

``plateau`` is driven by test results, not by ``iter``: the solver's
:class:`~pycaffe_lite.solvers.plateau.PlateauMonitor` raises ``current_step`` (the number of
reductions so far) when the watched test output has not improved for ``plateau_patience`` tests.
``plateau_factor`` divides (2 or 5 in the usual advice; 10 by default, i.e. Caffe's common
``gamma: 0.1``).
"""
from __future__ import annotations

import difflib
import math

from ..errors import SolverConfigError
from ..log import cfmt, logger
from ..registry import LR_POLICIES, register_lr_policy

__all__ = ["LR_POLICIES", "learning_rate"]


def _need(ok: bool, policy: str, what: str, got) -> None:
    if not ok:
        raise SolverConfigError(f"lr_policy '{policy}' needs {what} (got {got})")


@register_lr_policy("fixed")
def fixed(p, it: int, current_step: int):
    return float(p.base_lr), current_step


@register_lr_policy("step")
def step(p, it: int, current_step: int):
    _need(p.stepsize > 0, "step", "stepsize > 0", p.stepsize)
    _need(p.gamma >= 0, "step", "gamma >= 0", p.gamma)
    current_step = it // p.stepsize
    return p.base_lr * float(p.gamma) ** current_step, current_step


@register_lr_policy("exp")
def exp(p, it: int, current_step: int):
    _need(p.gamma >= 0, "exp", "gamma >= 0", p.gamma)
    return p.base_lr * float(p.gamma) ** it, current_step


@register_lr_policy("inv")
def inv(p, it: int, current_step: int):
    _need(p.gamma >= 0, "inv", "gamma >= 0", p.gamma)
    return p.base_lr * (1.0 + p.gamma * it) ** (-float(p.power)), current_step


@register_lr_policy("multistep")
def multistep(p, it: int, current_step: int):
    # Like Caffe, advance at most one step per call: the solver asks every iteration.
    _need(p.gamma >= 0, "multistep", "gamma >= 0", p.gamma)
    if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
        current_step += 1
        logger.info("MultiStep Status: Iteration %d, step = %d", it, current_step)
    return p.base_lr * float(p.gamma) ** current_step, current_step


@register_lr_policy("poly")
def poly(p, it: int, current_step: int):
    _need(p.max_iter > 0, "poly", "max_iter > 0", p.max_iter)
    frac = 1.0 - it / p.max_iter
    if frac < 0:
        raise SolverConfigError(
            f"lr_policy 'poly' is undefined past max_iter: iteration {it} > max_iter {p.max_iter}"
        )
    return p.base_lr * frac ** float(p.power), current_step


@register_lr_policy("sigmoid")
def sigmoid(p, it: int, current_step: int):
    _need(p.gamma >= 0, "sigmoid", "gamma >= 0", p.gamma)
    _need(p.stepsize > 0, "sigmoid", "stepsize > 0", p.stepsize)
    z = -p.gamma * (it - p.stepsize)
    # exp overflows a double above ~709; the rate is 0 to double precision long before.
    return (p.base_lr / (1.0 + math.exp(z)) if z < 700 else 0.0), current_step


@register_lr_policy("plateau")
def plateau(p, it: int, current_step: int):
    _need(p.plateau_factor > 1, "plateau", "plateau_factor > 1 (the rate is divided by it)", cfmt(p.plateau_factor))
    _need(p.plateau_min_lr >= 0, "plateau", "plateau_min_lr >= 0", cfmt(p.plateau_min_lr))
    _need(p.plateau_patience >= 1, "plateau", "plateau_patience >= 1 (tests without improvement)",
          p.plateau_patience)
    return max(p.base_lr / float(p.plateau_factor) ** current_step, float(p.plateau_min_lr)), current_step


def learning_rate(param, it: int, current_step: int, where: str = ""):
    """Look up ``param.lr_policy`` and return ``(rate, current_step)`` at iteration ``it``.

    ``where`` ("solver.prototxt: ") prefixes the error for an unknown or unset policy.
    """
    name = param.lr_policy
    if not name:
        raise SolverConfigError(f"{where}lr_policy is not set; use one of: {', '.join(LR_POLICIES.names())}")
    if name not in LR_POLICIES:
        close = difflib.get_close_matches(name, LR_POLICIES.names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SolverConfigError(
            f"{where}unknown lr_policy '{name}'.{hint} Known lr_policies: {', '.join(LR_POLICIES.names())}"
        )
    try:
        return LR_POLICIES.get(name)(param, it, current_step)
    except SolverConfigError as e:
        raise SolverConfigError(f"{where}{e}") from None

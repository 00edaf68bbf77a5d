"""The test-output monitor behind ``lr_policy: "plateau"``, early stopping and the best snapshot.

One scalar output of one test net (``plateau_output`` of test net ``plateau_test_net``) is
watched after every test.  A test *improves* when its value beats the best so far by more than
``plateau_threshold`` (absolute): ``v > best + threshold`` in MAX mode, ``v < best - threshold``
in MIN mode; the first test always improves.  Then:

* lr_policy ``plateau``: after ``plateau_patience`` tests in a row without improvement the
  solver's ``current_step`` (the number of reductions) goes up by one, so the rate is divided by
  ``plateau_factor`` (see :func:`pycaffe_lite.solvers.lr_policy.plateau`), and the count starts
  again.  Nothing happens once the rate has reached ``plateau_min_lr``.
* ``early_stopping_patience`` N > 0: training stops at the N-th test in a row without
  improvement (this count is not reset by a reduction).
* ``snapshot_best`` (default on): every improvement writes the weights just tested to
  ``<snapshot_prefix>_best.caffemodel``, atomically.

The state (best value and its iteration, both counts, the iteration of the last test and the
best snapshot's path) is saved in the SolverState's ``plateau_state`` extension, so a resumed
run takes the same decisions as an uninterrupted one.  A test repeated at the iteration of the
last one (a run resumed from the snapshot written right after it) is not counted twice.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..log import cfmt


@dataclass
class Decision:
    """What one test means: ``improved`` (new best), ``reduce`` (divide the rate), ``stop``."""

    improved: bool = False
    reduce: bool = False
    stop: bool = False
    counted: bool = True


def is_active(param) -> bool:
    """True when the solver watches a test output (plateau policy, early stopping or an output)."""
    return param.lr_policy == "plateau" or param.early_stopping_patience != 0 or bool(param.plateau_output)


class PlateauMonitor:
    """Tracks the best value of one test output and counts the tests without improvement.

    Parameters
    ----------
    param : caffe.SolverParameter
    test_nets : list of Net
        The solver's test nets (the watched output must be one of their outputs).
    err : callable
        ``err(message, field) -> SolverConfigError`` (prefixes the solver file and line).
    """

    def __init__(self, param, test_nets: list, err) -> None:
        p = param
        uses = ("lr_policy 'plateau'" if p.lr_policy == "plateau"
                else "early_stopping_patience" if p.early_stopping_patience > 0 else "plateau_output")
        if p.early_stopping_patience < 0:
            raise err(f"early_stopping_patience must be >= 0 (0 turns it off; got {p.early_stopping_patience})",
                      "early_stopping_patience")
        if p.plateau_patience < 1:
            raise err(f"plateau_patience must be >= 1 (tests without improvement; got {p.plateau_patience})",
                      "plateau_patience")
        if p.plateau_factor <= 1:
            raise err(f"plateau_factor must be > 1: the rate is divided by it (got {cfmt(p.plateau_factor)}; "
                      "for Caffe's gamma 0.1 write plateau_factor: 10)", "plateau_factor")
        if p.plateau_threshold < 0:
            raise err(f"plateau_threshold must be >= 0 (got {cfmt(p.plateau_threshold)})", "plateau_threshold")
        if p.plateau_min_lr < 0:
            raise err(f"plateau_min_lr must be >= 0 (got {cfmt(p.plateau_min_lr)})", "plateau_min_lr")
        if not test_nets:
            raise err(f"{uses} watches a test net output, but the solver has no test net: add test_net (or "
                      "net) with test_iter and test_interval", "lr_policy")
        if p.test_interval <= 0:
            raise err(f"{uses} watches a test net output, but test_interval is {p.test_interval}: set "
                      "test_interval > 0 so that the test nets run", "test_interval")
        if not 0 <= p.plateau_test_net < len(test_nets):
            raise err(f"plateau_test_net {p.plateau_test_net} is out of range: the solver has "
                      f"{len(test_nets)} test net(s), #0..#{len(test_nets) - 1}", "plateau_test_net")
        net = test_nets[p.plateau_test_net]
        outputs = list(net.outputs)
        if not p.plateau_output:
            raise err(f"{uses} needs plateau_output: the test net output to watch; test net "
                      f"#{p.plateau_test_net} has outputs: {', '.join(outputs) or 'none'}", "plateau_output")
        if p.plateau_output not in outputs:
            raise err(f"plateau_output '{p.plateau_output}' is not an output of test net #{p.plateau_test_net} "
                      f"('{net.name}'); its outputs are: {', '.join(outputs) or 'none'}", "plateau_output")
        count = net.blobs[p.plateau_output].count()
        if count != 1:
            raise err(f"plateau_output '{p.plateau_output}' has {count} values; the monitor needs a scalar "
                      "output (e.g. Accuracy's or a loss's top)", "plateau_output")
        self.output = p.plateau_output
        self.net_id = int(p.plateau_test_net)
        self.mode = self._mode(p, net, err)
        self.reduces = p.lr_policy == "plateau"
        self.patience = int(p.plateau_patience)
        self.factor = float(p.plateau_factor)
        self.threshold = float(p.plateau_threshold)
        self.min_lr = float(p.plateau_min_lr)
        self.early_patience = int(p.early_stopping_patience)
        self.best: float | None = None
        self.best_iter = -1
        self.wait = 0
        self.tests_since_best = 0
        self.last_test_iter = -1
        self.best_snapshot = ""

    def _mode(self, p, net, err) -> str:
        if p.plateau_mode == p.MIN:
            return "min"
        if p.plateau_mode == p.MAX:
            return "max"
        name = self.output.lower()
        if net.blob_loss_weights.get(self.output, 0.0) or "loss" in name:
            return "min"
        if "acc" in name:
            return "max"
        raise err(f"cannot tell whether plateau_output '{self.output}' should rise or fall: set "
                  "plateau_mode: MAX (e.g. an accuracy) or plateau_mode: MIN (e.g. a loss)", "plateau_mode")

    # ------------------------------------------------------------------ decisions
    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.threshold
        return value < self.best - self.threshold

    def update(self, value: float, it: int, rate: float) -> Decision:
        """Count the test at iteration ``it`` (the rate now is ``rate``) and say what follows."""
        if it == self.last_test_iter:
            return Decision(counted=False)
        self.last_test_iter = it
        if self.better(value):
            self.best, self.best_iter = float(value), it
            self.wait = self.tests_since_best = 0
            return Decision(improved=True)
        self.wait += 1
        self.tests_since_best += 1
        d = Decision()
        if self.reduces and self.wait >= self.patience:
            self.wait = 0
            d.reduce = rate > self.min_lr
        d.stop = self.early_patience > 0 and self.tests_since_best >= self.early_patience
        return d

    def describe_best(self) -> str:
        where = f" (snapshot: {self.best_snapshot})" if self.best_snapshot else ""
        return f"Best {self.output} = {cfmt(self.best)} at iteration {self.best_iter}{where}"

    # ------------------------------------------------------------------ solverstate
    def to_proto(self, msg) -> None:
        """Fill a ``caffe.PlateauState``."""
        if self.best is not None:
            msg.best = self.best
        msg.best_iter = self.best_iter
        msg.wait = self.wait
        msg.tests_since_best = self.tests_since_best
        msg.last_test_iter = self.last_test_iter
        msg.best_snapshot = self.best_snapshot

    def from_proto(self, msg) -> None:
        self.best = float(msg.best) if msg.best_iter >= 0 else None
        self.best_iter = int(msg.best_iter)
        self.wait = int(msg.wait)
        self.tests_since_best = int(msg.tests_since_best)
        self.last_test_iter = int(msg.last_test_iter)
        self.best_snapshot = msg.best_snapshot

"""The Layer contract (Caffe's semantics, pycaffe's spelling).

A layer overrides exactly ``setup``, ``reshape``, ``forward`` and ``backward``.
The framework's wrappers (``set_up``, ``run_forward``, ``run_backward``) check blob
counts, reshape before every forward, apply loss weights and return the loss.

Conventions every layer follows:

* Parameter diffs accumulate (``+=``); bottom diffs are assigned (``=``).
* Loss weights live in the top diff, as in Caffe: a loss layer scales its
  gradient by ``top[0].diff.flat[0]``.
* ``self.blobs`` holds the learnable parameters in Caffe order (weight, bias).
  ``init_param_blobs`` leaves blobs loaded from a caffemodel alone.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .blob import Blob
from .errors import NetConfigError, ShapeError

TRAIN = 0
TEST = 1


class Layer:
    """Base class of every layer; see the module docstring for the contract."""

    type: str = ""
    exact_num_bottom: int | None = None
    min_num_bottom: int | None = None
    max_num_bottom: int | None = None
    exact_num_top: int | None = None
    min_num_top: int | None = None
    max_num_top: int | None = None
    equal_num_bottom_top: bool = False
    #: loss layers put loss_weight 1 on their first top unless the prototxt says otherwise
    is_loss: bool = False
    #: the layer's backward makes its own parameter gradients without any loss above it
    #: (an RBM trained by contrastive divergence): the net runs its backward whenever one
    #: of its parameters learns, even when no loss depends on its tops
    self_trained: bool = False

    def __init__(self, layer_param, where: str = "") -> None:
        self.layer_param = layer_param
        self.name: str = layer_param.name
        self.phase: int = layer_param.phase
        #: "file:line: " of the layer in its prototxt, for messages
        self.where = where
        self.blobs: list[Blob] = []
        for i, bp in enumerate(layer_param.blobs):
            b = Blob(name=f"{self.name}[{i}]")
            b.from_proto(bp)
            self.blobs.append(b)
        self.param_propagate_down: list[bool] = []
        self.loss_weights: list[float] = []

    # ---- to override --------------------------------------------------------------
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """One-time set-up: read the layer's parameters, create ``self.blobs``."""

    def reshape(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Shape the tops (and any buffers) from the bottoms; runs before every forward."""
        raise NotImplementedError(f"{type(self).__name__}.reshape")

    def forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        """Default: nothing to propagate (data layers, Accuracy, ...)."""

    def allow_force_backward(self, bottom_index: int) -> bool:
        """False for inputs that can never take a gradient (e.g. a loss layer's labels)."""
        return True

    def get_state(self) -> list[np.ndarray]:
        """Arrays (other than ``self.blobs``) that the layer carries from one iteration to the
        next, e.g. persistent Gibbs chains; the solver saves them in its solverstate."""
        return []

    def set_state(self, arrays: Sequence[np.ndarray]) -> None:
        """Restore what :meth:`get_state` returned (when a solverstate is restored)."""
        if len(arrays):
            import logging

            logging.getLogger("pycaffe_lite").warning(
                "%s: carries no state across iterations; %d saved arrays ignored", self.describe(), len(arrays)
            )

    # ---- helpers for layers -------------------------------------------------------
    def describe(self) -> str:
        """``file:line: layer 'name' (Type)`` for error messages."""
        return f"{self.where}layer '{self.name}' ({self.type})"

    def config_error(self, message: str) -> NetConfigError:
        return NetConfigError(f"{self.describe()}: {message}")

    def shape_error(self, message: str) -> ShapeError:
        return ShapeError(f"{self.describe()}: {message}")

    def init_param_blobs(self, shapes: Sequence[tuple[int, ...]], fillers: Sequence) -> None:
        """Create and fill ``self.blobs`` — or, when they came from a caffemodel, check them.

        ``fillers[i]`` is a FillerParameter (or None for zeros).
        """
        from .filler import fill

        shapes = [tuple(int(d) for d in s) for s in shapes]
        if self.blobs:
            if len(self.blobs) != len(shapes):
                raise self.shape_error(f"{len(self.blobs)} stored parameter blobs, expected {len(shapes)}")
            for i, (b, s) in enumerate(zip(self.blobs, shapes)):
                if b.shape != s:
                    if len(s) < 4 and len(b.shape) == 4 and b.shape[:4 - len(s)] == (1,) * (4 - len(s)) \
                            and b.count() == int(np.prod(s)):
                        b.reshape(s)  # legacy 4-d blob, e.g. (1, 1, N, K) for (N, K)
                        continue
                    raise self.shape_error(f"parameter blob {i} has shape {b.shape} but the layer expects {s}")
            return
        for i, (s, f) in enumerate(zip(shapes, fillers)):
            b = Blob(s, name=f"{self.name}[{i}]")
            if f is not None:
                fill(b, f)
            self.blobs.append(b)

    # ---- framework wrappers -------------------------------------------------------
    def check_blob_counts(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        nb, nt = len(bottom), len(top)

        def bad(what: str, n: int, rule: str) -> NetConfigError:
            return self.config_error(f"takes {rule} {what} blob(s), got {n}")

        if self.exact_num_bottom is not None and nb != self.exact_num_bottom:
            raise bad("bottom", nb, f"exactly {self.exact_num_bottom}")
        if self.min_num_bottom is not None and nb < self.min_num_bottom:
            raise bad("bottom", nb, f"at least {self.min_num_bottom}")
        if self.max_num_bottom is not None and nb > self.max_num_bottom:
            raise bad("bottom", nb, f"at most {self.max_num_bottom}")
        if self.exact_num_top is not None and nt != self.exact_num_top:
            raise bad("top", nt, f"exactly {self.exact_num_top}")
        if self.min_num_top is not None and nt < self.min_num_top:
            raise bad("top", nt, f"at least {self.min_num_top}")
        if self.max_num_top is not None and nt > self.max_num_top:
            raise bad("top", nt, f"at most {self.max_num_top}")
        if self.equal_num_bottom_top and nb != nt:
            raise self.config_error(f"needs as many tops as bottoms, got {nb} bottoms and {nt} tops")

    def set_up(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        """Check arity, run ``setup`` and ``reshape``, then set loss weights (Caffe's SetUp)."""
        self.check_blob_counts(bottom, top)
        self.setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)
        if len(self.param_propagate_down) != len(self.blobs):
            self.param_propagate_down = [True] * len(self.blobs)

    def set_loss_weights(self, top: Sequence[Blob]) -> None:
        lw = list(self.layer_param.loss_weight)
        if lw and len(lw) != len(top):
            raise self.config_error(f"{len(lw)} loss_weight values for {len(top)} tops; give one per top")
        if not lw:
            lw = [1.0 if (self.is_loss and i == 0) else 0.0 for i in range(len(top))]
            if self.is_loss:
                # Caffe's loss layers write their default weight into their own parameter, so
                # it is what a caffemodel stores; we do the same for byte-equal files.
                self.layer_param.loss_weight.extend(lw)
        self.loss_weights = [float(w) for w in lw]
        for t, w in zip(top, self.loss_weights):
            if w:
                t.diff[...] = w

    def run_forward(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> float:
        """Reshape, forward, and return the weighted loss of this layer's tops."""
        self.reshape(bottom, top)
        self.forward(bottom, top)
        loss = 0.0
        for t, w in zip(top, self.loss_weights):
            if w:
                t.diff[...] = w
                loss += float(np.dot(t.data.ravel(), t.diff.ravel()))
        return loss

    def run_backward(self, top: Sequence[Blob], propagate_down: Sequence[bool], bottom: Sequence[Blob]) -> None:
        self.backward(top, propagate_down, bottom)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}'>"

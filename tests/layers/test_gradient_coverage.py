"""Meta-test: every registered layer whose class overrides ``backward`` has a gradient test.

Each ``tests/layers/test_*.py`` declares ``GRADIENT_CHECKED = {...}``: the Caffe type
strings whose gradients it checks with ``pycaffe_lite.testing.check_gradient``.  This
module loads them all and compares the union with ``pycaffe_lite.registry.LAYERS``.
A layer without a gradient goes in ``EXEMPT`` with the reason.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import pycaffe_lite.layers
from pycaffe_lite.layer import Layer
from pycaffe_lite.registry import LAYERS

HERE = Path(__file__).resolve().parent

#: type -> why it has no gradient test
EXEMPT: dict[str, str] = {
    "Accuracy": "a metric with no gradient: its backward only raises when asked to propagate",
    "Threshold": "a step function, piecewise constant (Caffe implements no backward); its backward only "
                 "raises when asked to propagate, which test_neuron_extra.py checks",
    "ArgMax": "indices of maxima are piecewise constant (Caffe implements no backward); its backward only "
              "raises when asked to propagate, which test_utility.py checks",
    "RBM": "its parameter diffs are a stochastic contrastive-divergence estimate, not the derivative of a "
           "forward quantity; test_rbm.py checks them against the CD formula in NumPy with the same random "
           "draws, and the sampler against exact model expectations",
}


def _import_every_layer_module() -> None:
    """Import all of pycaffe_lite.layers, not only what its __init__ lists."""
    for info in pkgutil.iter_modules(pycaffe_lite.layers.__path__):
        importlib.import_module(f"{pycaffe_lite.layers.__name__}.{info.name}")


def _load(path: Path):
    """Import a test module of this folder as part of the tests package."""
    return importlib.import_module(f"{__package__}.{path.stem}")


@pytest.fixture(scope="module")
def declarations() -> dict[str, object]:
    """file name -> its GRADIENT_CHECKED (None when the module declares none)."""
    _import_every_layer_module()
    this = Path(__file__).resolve()
    return {
        path.name: getattr(_load(path), "GRADIENT_CHECKED", None)
        for path in sorted(HERE.glob("test_*.py"))
        if path.resolve() != this
    }


def overrides_backward(cls) -> bool:
    return cls.backward is not Layer.backward


def test_every_layer_test_module_declares_gradient_checked(declarations):
    missing = [name for name, checked in declarations.items() if checked is None]
    assert not missing, (
        f"{', '.join(missing)} must declare GRADIENT_CHECKED = {{...}} (the layer types whose "
        "gradients they check; an empty set() if none)"
    )


def test_every_backward_has_a_gradient_test(declarations):
    checked = {LAYERS.canonical(t) for types in declarations.values() if types for t in types}
    missing = [
        name
        for name in LAYERS.names()
        if overrides_backward(LAYERS.get(name)) and name not in checked and name not in EXEMPT
    ]
    assert not missing, (
        f"layer types with a backward but no gradient test: {', '.join(missing)}. Add a test calling "
        "pycaffe_lite.testing.check_gradient to tests/layers/test_<module>.py and list the type in its "
        "GRADIENT_CHECKED, or exempt it in test_gradient_coverage.EXEMPT with the reason"
    )


def test_declared_and_exempt_types_are_registered(declarations):
    unknown = [
        f"{t} ({name})" for name, types in declarations.items() if types for t in types if t not in LAYERS
    ]
    unknown += [f"{t} (EXEMPT)" for t in EXEMPT if t not in LAYERS]
    assert not unknown, f"not registered layer types: {', '.join(unknown)}"


def test_declaring_modules_use_the_gradient_checker(declarations):
    lazy = [
        name
        for name, types in declarations.items()
        if types and "check_gradient" not in (HERE / name).read_text()
    ]
    assert not lazy, f"{', '.join(lazy)} declare GRADIENT_CHECKED but never call check_gradient"


def test_the_meta_test_catches_a_missing_gradient_test():
    class Undeclared(Layer):
        def backward(self, top, propagate_down, bottom):
            pass

    class NoBackward(Layer):
        pass

    assert overrides_backward(Undeclared) and not overrides_backward(NoBackward)

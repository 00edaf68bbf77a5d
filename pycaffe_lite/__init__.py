"""pycaffe_lite: Caffe-style declarative deep learning in Python.

Write a net as prototxt, build it with :class:`Net`, train it with a solver from
:func:`get_solver`; caffemodels and solverstates are byte-compatible with BVLC Caffe.
"""
from . import _threads  # noqa: F401  (must run before numpy/numba are imported)
from .blob import Blob
from .errors import (
    DataError,
    NetConfigError,
    PliteError,
    PrototxtSyntaxError,
    ShapeError,
    SolverConfigError,
    TrainingDivergedError,
)
from .layer import TEST, TRAIN, Layer
from .rng import set_random_seed

__version__ = "0.1.0"

__all__ = [
    "TEST",
    "TRAIN",
    "Blob",
    "DataError",
    "Layer",
    "NetConfigError",
    "PliteError",
    "PrototxtSyntaxError",
    "ShapeError",
    "SolverConfigError",
    "TrainingDivergedError",
    "set_random_seed",
]


def __getattr__(name):
    # Net and the solvers import every layer; load them on first use so that
    # `import pycaffe_lite` stays cheap for tools that only need the schema.
    if name == "Net":
        from .net import Net

        return Net
    if name in ("get_solver", "Solver"):
        from . import solvers

        return getattr(solvers, name)
    raise AttributeError(f"module 'pycaffe_lite' has no attribute {name!r}")

"""pycaffe_lite: Caffe-style declarative deep learning in Python.

Write a net as prototxt, build it with :class:`Net`, train it with a solver from
:func:`get_solver`; caffemodels and solverstates are byte-compatible with BVLC Caffe.

pycaffe's names work here: ``Net``, ``SGDSolver`` ... ``AdamSolver``, ``get_solver``,
``TRAIN``/``TEST``, ``io`` (``io.Transformer``, ``io.load_image``...), ``NetSpec`` and
``set_mode_cpu``/``set_random_seed``.  NetSpec's ``caffe.layers``/``caffe.params`` are
``pycaffe_lite.L``/``pycaffe_lite.P`` (``pycaffe_lite.layers`` is the package of layer
implementations), or ``from pycaffe_lite.net_spec import layers as L, params as P``.
Net, the solvers, NetSpec and io load on first use, so ``import pycaffe_lite`` stays cheap.
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
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "Blob",
    "DataError",
    "L",
    "Layer",
    "NesterovSolver",
    "Net",
    "NetConfigError",
    "NetSpec",
    "P",
    "PliteError",
    "PrototxtSyntaxError",
    "RMSPropSolver",
    "SGDSolver",
    "ShapeError",
    "Solver",
    "SolverConfigError",
    "TrainingDivergedError",
    "get_solver",
    "io",
    "layer_type_list",
    "set_device",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_random_seed",
    "to_proto",
]

_SOLVER_NAMES = ("get_solver", "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                 "AdaDeltaSolver", "AdamSolver")
#: pycaffe name -> its name in net_spec (loaded on first use)
_NET_SPEC_NAMES = {"NetSpec": "NetSpec", "L": "layers", "P": "params", "to_proto": "to_proto"}


def set_mode_cpu() -> None:
    """pycaffe's ``caffe.set_mode_cpu()``: this build always runs on the CPU, so nothing to do."""


def set_mode_gpu() -> None:
    """pycaffe's ``caffe.set_mode_gpu()``: refused, this build has no GPU code."""
    raise PliteError("set_mode_gpu: pycaffe_lite runs on the CPU only (NumPy + Numba); there is no GPU mode. "
                     "Remove the call, or use set_mode_cpu()")


def set_device(device_id: int) -> None:
    """pycaffe's ``caffe.set_device(id)``: refused, this build has no GPU code."""
    raise PliteError(f"set_device({device_id}): pycaffe_lite runs on the CPU only; there are no GPU devices "
                     "to choose from. Remove the call")


def layer_type_list() -> list[str]:
    """pycaffe's ``caffe.layer_type_list()``: every registered layer type."""
    from . import layers  # noqa: F401  (registers every layer type)
    from .registry import LAYERS

    return LAYERS.names()


def __getattr__(name):
    # Net and the solvers import every layer; load them on first use so that
    # `import pycaffe_lite` stays cheap for tools that only need the schema.
    if name == "Net":
        from .net import Net

        return Net
    if name in _SOLVER_NAMES:
        from . import solvers

        return getattr(solvers, name)
    if name in _NET_SPEC_NAMES:
        from . import net_spec

        return getattr(net_spec, _NET_SPEC_NAMES[name])
    if name == "io":
        import importlib

        return importlib.import_module(".io", __name__)
    raise AttributeError(f"module 'pycaffe_lite' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""The error hierarchy.

Every message names the place and the facts (file:line, layer name and type, blob,
expected vs actual) and, where there is one, the fix.  The CLI prints ``str(err)``
and exits 1; ``--debug`` shows the traceback.
"""
from __future__ import annotations


class PliteError(Exception):
    """Base of every error pycaffe_lite raises on purpose."""


class PrototxtSyntaxError(PliteError):
    """A prototxt that is not valid text format, or names a field the schema lacks."""


class NetConfigError(PliteError):
    """A net definition that parses but cannot be built (unknown type, missing blob...)."""


class ShapeError(NetConfigError):
    """Blob shapes that do not fit a layer, or weights that do not fit a net."""


class SolverConfigError(PliteError):
    """A solver definition that cannot be run."""


class DataError(PliteError):
    """A missing, empty or corrupt dataset, mean file or weights file."""


class TrainingDivergedError(PliteError):
    """The loss or a blob became NaN/inf during training."""


def where(filename: str | None, line: int | None) -> str:
    """Format ``file:line: `` for messages; empty when the place is unknown."""
    if filename and line:
        return f"{filename}:{line}: "
    if filename:
        return f"{filename}: "
    return ""

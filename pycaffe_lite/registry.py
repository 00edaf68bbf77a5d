"""One registry kind for layers, solvers, fillers and learning-rate policies.

Entries are registered under Caffe's exact type strings; layers also under their
legacy V1 enum name so old prototxts resolve.  A duplicate is an error; an unknown
name lists the known ones.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TypeVar

from .errors import NetConfigError, PliteError, SolverConfigError

T = TypeVar("T")


class Registry:
    """A name -> object table with clear errors."""

    def __init__(self, kind: str, error: type[PliteError] = NetConfigError) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, object] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries or key in self._aliases:
                    raise PliteError(f"{self.kind} '{key}' is registered twice")
            self._entries[name] = obj
            for alias in aliases:
                self._aliases[alias] = name
            return obj

        return deco

    def canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, where: str = ""):
        """Return the entry for ``name`` or raise ``self.error`` listing the known names."""
        key = self.canonical(name)
        if key in self._entries:
            return self._entries[key]
        close = difflib.get_close_matches(name, list(self._entries) + list(self._aliases), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise self.error(
            f"{where}unknown {self.kind} '{name}'.{hint} Known {self.kind}s: {', '.join(self.names())}"
        )


LAYERS = Registry("layer type")
SOLVERS = Registry("solver type", SolverConfigError)
FILLERS = Registry("filler type")
LR_POLICIES = Registry("lr_policy", SolverConfigError)


def register_layer(type_name: str, v1: str | None = None):
    """Class decorator: register a Layer under its Caffe type (and V1 enum name)."""
    aliases = (v1,) if v1 else ()

    def deco(cls):
        cls.type = type_name
        return LAYERS.register(type_name, *aliases)(cls)

    return deco


def register_solver(type_name: str, legacy: str | None = None):
    """Class decorator: register a Solver under its ``type:`` string (and the old enum)."""
    aliases = (legacy,) if legacy else ()

    def deco(cls):
        cls.type = type_name
        return SOLVERS.register(type_name, *aliases)(cls)

    return deco


def register_filler(name: str):
    return FILLERS.register(name)


def register_lr_policy(name: str):
    return LR_POLICIES.register(name)

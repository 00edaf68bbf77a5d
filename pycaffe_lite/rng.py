"""The one random number generator every filler, Dropout and Data layer draws from.

``set_random_seed(s)`` (the solver's ``random_seed``) makes a whole run repeatable.
"""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def set_random_seed(seed: int) -> None:
    """Reseed the shared generator (pycaffe's ``caffe.set_random_seed``)."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def get_rng() -> np.random.Generator:
    return _rng


def get_state() -> dict:
    return _rng.bit_generator.state


def set_state(state: dict) -> None:
    _rng.bit_generator.state = state

"""WindowData is not supported: a net using it fails with a message saying what to use instead."""
from __future__ import annotations

import pytest

from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.registry import LAYERS

from .layer_test_template import setup_layer

GRADIENT_CHECKED: set[str] = set()  # not supported at all


def test_clear_error():
    assert LAYERS.get("WINDOW_DATA") is LAYERS.get("WindowData")
    with pytest.raises(NetConfigError, match=r"layer 'windows' \(WindowData\): WindowData .* not supported.*ImageData"):
        setup_layer('name: "windows" type: "WindowData" window_data_param { source: "w.txt" }', [], num_top=2)

"""Helpers that keep each layer test short: build a layer from prototxt text, feed it
random bottoms, run it, and compare in-place with out-of-place runs.

Typical use::

    layer, bottom, top = setup_layer('type: "ReLU"', [(2, 3, 4)])
    forward(layer, bottom, top)
    check_gradient(layer, bottom, top, kink=0.0, kink_range=0.01)

(This module is not a test module; its name keeps pytest from collecting it.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf import text_format

import pycaffe_lite.layers  # noqa: F401  (registers every layer type)
from pycaffe_lite.blob import Blob
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.registry import LAYERS


def layer_param(text: str) -> caffe_pb2.LayerParameter:
    """A LayerParameter from prototxt text; ``name`` defaults to the type in lower case."""
    param = text_format.Parse(text, caffe_pb2.LayerParameter())
    if not param.name:
        param.name = param.type.lower() or "layer"
    return param


def make_layer(text: str):
    """An instance of the registered class for the text's ``type``."""
    param = layer_param(text)
    return LAYERS.get(param.type)(param)


def random_blob(
    shape: Sequence[int], seed: int = 0, low: float = -1.0, high: float = 1.0, name: str = ""
) -> Blob:
    """A blob with uniform random data in [low, high) and a zero diff."""
    blob = Blob(tuple(shape), name=name)
    blob.data[...] = np.random.default_rng(seed).uniform(low, high, size=blob.shape)
    return blob


def blob_from(array, name: str = "") -> Blob:
    """A blob holding ``array`` (converted to float32)."""
    array = np.asarray(array, dtype=np.float32)
    blob = Blob(array.shape, name=name)
    blob.data[...] = array
    return blob


def as_blobs(specs, seed: int = 0) -> list[Blob]:
    """Blobs from a list of shapes (random data) or arrays (exact data)."""
    blobs = []
    for i, spec in enumerate(specs):
        if isinstance(spec, Blob):
            blobs.append(spec)
        elif isinstance(spec, np.ndarray):
            blobs.append(blob_from(spec, name=f"bottom{i}"))
        else:
            blobs.append(random_blob(spec, seed=seed + i, name=f"bottom{i}"))
    return blobs


def setup_layer(text: str, bottoms, num_top: int = 1, seed: int = 0):
    """Build the layer, make bottoms (shapes -> random, arrays -> exact) and ``num_top``
    empty tops, run ``set_up``; return ``(layer, bottom, top)``."""
    layer = make_layer(text)
    bottom = as_blobs(bottoms, seed=seed)
    top = [Blob(name=f"top{i}") for i in range(num_top)]
    layer.set_up(bottom, top)
    return layer, bottom, top


def forward(layer, bottom, top) -> float:
    """One forward pass (with reshape); returns the weighted loss."""
    return layer.run_forward(bottom, top)


def backward(layer, bottom, top, top_diffs=None, propagate_down=None, seed: int = 7) -> None:
    """Set the top diffs (given, or random) and run backward; parameter diffs are zeroed first.

    ``propagate_down`` defaults to every bottom that can take a gradient (not labels).
    """
    rs = np.random.default_rng(seed)
    for i, t in enumerate(top):
        t.diff[...] = rs.uniform(-1, 1, size=t.shape) if top_diffs is None else top_diffs[i]
    for b in layer.blobs:
        b.diff[...] = 0
    if propagate_down is None:
        propagate_down = [layer.allow_force_backward(i) for i in range(len(bottom))]
    layer.run_backward(top, propagate_down, bottom)


def assert_in_place_matches(text: str, shape: Sequence[int], seed: int = 0, before_forward=None) -> None:
    """Run the layer out of place and in place (``bottom[0] is top[0]``) on the same data
    and top diff; the top data and the bottom diff must be identical.

    ``before_forward`` is called before each forward (e.g. to reseed the RNG).
    """
    x = random_blob(shape, seed=seed)
    top_diff = np.random.default_rng(seed + 1).uniform(-1, 1, size=x.shape).astype(np.float32)

    layer, bottom, top = setup_layer(text, [x.data.copy()])
    if before_forward:
        before_forward()
    forward(layer, bottom, top)
    backward(layer, bottom, top, [top_diff])
    expected_top, expected_diff = top[0].data.copy(), bottom[0].diff.copy()

    shared = blob_from(x.data, name="shared")
    layer = make_layer(text)
    layer.set_up([shared], [shared])
    if before_forward:
        before_forward()
    forward(layer, [shared], [shared])
    np.testing.assert_array_equal(shared.data, expected_top)
    backward(layer, [shared], [shared], [top_diff])
    np.testing.assert_array_equal(shared.diff, expected_diff)

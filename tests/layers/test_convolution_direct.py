"""Convolution on the direct path (``DIRECT``: kernels/direct_conv.py): the same tops and
gradients as the column/row path, on one thread and split, with the input gradient direct or
through columns, and a numeric gradient check."""
import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.layers import convolution
from pycaffe_lite.layers.convolution import ConvolutionLayer
from pycaffe_lite.testing import check_gradient
from tests.layers.test_convolution import blob, make
from tests.layers.test_convolution_split import _run

GRADIENT_CHECKED = {"Convolution"}

# (convolution_param, bottom shape, whether dx is direct too)
CASES = [
    pytest.param("convolution_param { num_output: 32 kernel_size: 3 pad: 1 }", (5, 32, 8, 8), True, id="dx-direct"),
    pytest.param("convolution_param { num_output: 64 kernel_size: 5 pad: 2 }", (3, 32, 8, 16), True, id="two-blocks"),
    pytest.param("convolution_param { num_output: 32 kernel_size: 5 pad: 2 }", (4, 3, 8, 8), False,
                 id="three-channels-dx-columns"),
    pytest.param("convolution_param { num_output: 32 kernel_size: 3 }", (3, 32, 10, 10), False,
                 id="rows-not-8-dx-rows"),
    pytest.param("convolution_param { num_output: 32 kernel_h: 3 kernel_w: 1 pad_h: 1 bias_term: false }",
                 (2, 64, 3, 8), True, id="1-wide-no-bias"),
    pytest.param("convolution_param { num_output: 48 kernel_size: 3 pad: 1 }", (2, 32, 8, 8), True,
                 id="48-channels-padded-to-64"),
]


def _one_part(monkeypatch):
    """The direct path (on even where it is off by default: no AVX-512) without a split (as on one
    thread)."""
    monkeypatch.setattr(convolution, "DIRECT", True)
    monkeypatch.setattr(ConvolutionLayer, "_use_direct",
                        lambda self, cut, backward=False: self.direct_bwd if backward else self.direct)


@pytest.mark.parametrize("split", [False, True], ids=["one-part", "split"])
@pytest.mark.parametrize("chunk", [None, 1], ids=["default-chunks", "image-chunks"])
@pytest.mark.parametrize("text,shape,dx_direct", CASES)
def test_direct_equals_the_column_path(monkeypatch, text, shape, dx_direct, split, chunk):
    _one_part(monkeypatch)
    if chunk is not None:
        monkeypatch.setattr(convolution, "DIRECT_CHUNK_BYTES", chunk)
    monkeypatch.setattr(convolution, "DIRECT", False)
    layer, want = _run(text, shape, 1, split, monkeypatch)
    assert not layer.direct
    monkeypatch.setattr(convolution, "DIRECT", True)
    layer, got = _run(text, shape, 1, split, monkeypatch)
    assert layer.direct and layer.direct_bwd and layer.direct_dx is dx_direct
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))
    assert not np.allclose(got[-1], 0.25)  # the parameter gradients did arrive


def test_direct_with_two_bottoms_and_a_connection_table(monkeypatch):
    _one_part(monkeypatch)
    pairs = " ".join(f"connection: {i} connection: {o}" for o in range(32) for i in range(32) if (i + o) % 3)
    text = f"convolution_param {{ num_output: 32 kernel_size: 3 pad: 1 {pairs} }}"
    results = []
    for direct in (False, True):
        monkeypatch.setattr(convolution, "DIRECT", direct)
        layer, out = _run(text, (2, 32, 8, 8), 1, True, monkeypatch, bottoms=2)
        assert layer.direct is direct
        results.append(out)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    W = layer.blobs[0]
    mask = layer.connection_mask
    assert np.all(W.diff[~mask] == 0.25)  # unlisted filters' gradients stay as they were


def test_strided_grouped_or_small_layers_keep_the_column_path():
    for text, shape in [("num_output: 32 kernel_size: 3 stride: 2", (2, 32, 20, 20)),
                        ("num_output: 32 kernel_size: 3 group: 2", (2, 32, 10, 10)),
                        ("num_output: 16 kernel_size: 5", (2, 1, 28, 28)),  # 16 -> 32 channels: too much padding
                        ("num_output: 32 kernel_size: 3 pad: 1", (2, 32, 4, 4))]:
        layer = make(f"convolution_param {{ {text} }}")
        layer.set_up([blob(shape)], [Blob()])
        assert not layer.direct, text


@pytest.mark.parametrize("split", [False, True], ids=["one-part", "split"])
@pytest.mark.parametrize("text,shape,backward", [
    ("convolution_param { num_output: 20 kernel_size: 5 }", (3, 1, 28, 28), False),   # LeNet's conv1
    ("convolution_param { num_output: 50 kernel_size: 5 }", (3, 20, 12, 12), True),   # LeNet's conv2: dx by rows
])
def test_direct_with_padded_output_channels(monkeypatch, text, shape, backward, split):
    _one_part(monkeypatch)
    monkeypatch.setattr(convolution, "DIRECT", False)
    _, want = _run(text, shape, 1 << 30, split, monkeypatch)
    monkeypatch.setattr(convolution, "DIRECT", True)
    layer, got = _run(text, shape, 1 << 30, split, monkeypatch)
    assert layer.direct and layer.direct_bwd is backward and not layer.direct_dx  # small patches: columns
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))


def test_gradient_check_on_the_direct_path(monkeypatch):
    _one_part(monkeypatch)
    layer = make("convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: 'gaussian' "
                 "std: 0.3 } bias_filler { type: 'gaussian' } }")
    x, top = blob((2, 32, 8, 8)), Blob()
    assert check_gradient(layer, [x], [top], max_checks_per_blob=60, seed=None) > 0
    assert layer.direct and layer.direct_dx


def test_the_direct_path_is_on_by_default_only_for_avx512_code(monkeypatch):
    from numba.core import config

    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+fma")
    assert convolution._wide_vectors() is False
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+avx512f,+fma")
    assert convolution._wide_vectors() is True
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", "generic")
    assert convolution._wide_vectors() is False

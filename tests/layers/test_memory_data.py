"""MemoryData: batches from arrays set in Python (net.set_input_arrays), wrap-around, errors."""
from __future__ import annotations

import numpy as np
import pytest

import pycaffe_lite as pl
from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.io.prototxt import parse_net
from pycaffe_lite.layers.memory_data import MemoryDataLayer
from pycaffe_lite.registry import LAYERS

from .layer_test_template import forward, setup_layer

GRADIENT_CHECKED: set[str] = set()  # a data layer has no gradient

TEXT = 'name: "mem" type: "MemoryData" memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 }'


def test_registered():
    assert LAYERS.get("MemoryData") is MemoryDataLayer and LAYERS.get("MEMORY_DATA") is MemoryDataLayer


def test_batches_wrap_around():
    layer, bottom, top = setup_layer(TEXT, [], num_top=2)
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([5, 6, 7, 8], np.float32)
    layer.reset(data, labels)
    for k in range(3):
        forward(layer, bottom, top)
        rows = [(2 * k) % 4, (2 * k + 1) % 4]
        np.testing.assert_array_equal(top[0].data, data[rows])
        np.testing.assert_array_equal(top[1].data, labels[rows])


def test_set_input_arrays_through_the_net():
    net = pl.Net(parse_net(
        f"layer {{ {TEXT} top: 'data' top: 'label' }}\n"
        "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip' inner_product_param { num_output: 2 } }"
    ), phase=pl.TEST)
    data = np.random.default_rng(0).normal(size=(4, 1, 2, 3)).astype(np.float32)
    net.set_input_arrays(data, np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [2, 3])


def test_set_batch_size():
    layer, bottom, top = setup_layer(TEXT, [], num_top=2)
    layer.reset(np.zeros((4, 1, 2, 3)), np.zeros(4))
    layer.set_batch_size(4)
    forward(layer, bottom, top)
    assert top[0].shape == (4, 1, 2, 3)
    with pytest.raises(ShapeError, match="4 rows are not a multiple of batch size 3"):
        layer.set_batch_size(3)


def test_errors():
    with pytest.raises(NetConfigError, match=r"'mem' \(MemoryData\): memory_data_param batch_size, channels.*positive"):
        setup_layer('name: "mem" type: "MemoryData" memory_data_param { batch_size: 2 channels: 1 height: 2 }',
                    [], num_top=2)
    layer, bottom, top = setup_layer(TEXT, [], num_top=2)
    with pytest.raises(DataError, match=r"'mem' \(MemoryData\): no data yet; call net.set_input_arrays"):
        forward(layer, bottom, top)
    with pytest.raises(ShapeError, match=r"data must be \(N, 1, 2, 3\).*got \(2, 3, 2, 3\)"):
        layer.reset(np.zeros((2, 3, 2, 3)), np.zeros(2))
    with pytest.raises(ShapeError, match=r"labels must be \(N,\) or \(N, 1, 1, 1\) with N = 2"):
        layer.reset(np.zeros((2, 1, 2, 3)), np.zeros(3))
    with pytest.raises(ShapeError, match=r"number of rows \(3\) must be a positive multiple of batch_size 2"):
        layer.reset(np.zeros((3, 1, 2, 3)), np.zeros(3))
    with pytest.raises(NetConfigError, match="exactly 2 top"):
        setup_layer(TEXT, [], num_top=1)

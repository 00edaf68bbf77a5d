"""Flatten and Split: shapes, shared storage, gradients, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, make_layer, random_blob, setup_layer

GRADIENT_CHECKED = {"Flatten", "Split"}


# --- Flatten ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra,expected",
    [
        ("", (2, 60)),
        ("flatten_param { axis: 2 }", (2, 3, 20)),
        ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
        ("flatten_param { axis: -2 end_axis: -1 }", (2, 3, 20)),
        ("flatten_param { axis: 0 }", (120,)),
        ("flatten_param { axis: 3 end_axis: 3 }", (2, 3, 4, 5)),
    ],
)
def test_flatten_shapes_and_values(extra, expected):
    layer, bottom, top = setup_layer('type: "Flatten" ' + extra, [(2, 3, 4, 5)])
    assert top[0].shape == expected
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(expected))


def test_flatten_shares_data_and_diff():
    layer, bottom, top = setup_layer('type: "Flatten"', [(2, 3, 4)])
    forward(layer, bottom, top)
    assert np.shares_memory(top[0].data, bottom[0].data)
    bottom[0].data[0, 0, 0] = 9.0
    assert top[0].data[0, 0] == 9.0
    backward(layer, bottom, top)
    np.testing.assert_array_equal(bottom[0].diff.reshape(2, 12), top[0].diff)


def test_flatten_follows_a_new_batch_size():
    layer, bottom, top = setup_layer('type: "Flatten"', [(2, 3, 4)])
    bottom[0].reshape(7, 3, 4)
    bottom[0].data[...] = 1.5
    forward(layer, bottom, top)
    assert top[0].shape == (7, 12) and np.all(top[0].data == 1.5)


def test_flatten_gradient():
    layer, bottom, top = setup_layer('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [(2, 3, 2, 2)])
    check_gradient(layer, bottom, top, setup=False)


def test_flatten_errors():
    with pytest.raises(ShapeError, match=r"'fl'.*axis 4.*\(2, 3\)"):
        setup_layer('name: "fl" type: "Flatten" flatten_param { axis: 4 }', [(2, 3)])
    with pytest.raises(NetConfigError, match="'fl'.*end_axis"):
        setup_layer('name: "fl" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', [(2, 3, 4)])
    x = random_blob((2, 3))
    with pytest.raises(NetConfigError, match="in place"):
        make_layer('name: "fl" type: "Flatten"').set_up([x], [x])


# --- Split -----------------------------------------------------------------------------
def test_split_shares_data():
    layer, bottom, top = setup_layer('type: "Split"', [(2, 3, 4)], num_top=3)
    for t in top:
        assert t.shape == (2, 3, 4)
    forward(layer, bottom, top)
    for t in top:
        np.testing.assert_array_equal(t.data, bottom[0].data)
        assert np.shares_memory(t.data, bottom[0].data)


@pytest.mark.parametrize("num_top", [1, 2, 3])
def test_split_backward_sums(num_top):
    layer, bottom, top = setup_layer('type: "Split"', [(2, 5)], num_top=num_top)
    forward(layer, bottom, top)
    backward(layer, bottom, top)
    expected = sum(t.diff.astype(np.float64) for t in top)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-6)


def test_split_gradient():
    layer, bottom, top = setup_layer('type: "Split"', [(2, 3, 2)], num_top=2)
    check_gradient(layer, bottom, top, setup=False)


def test_split_not_in_place():
    x = random_blob((2, 3))
    with pytest.raises(NetConfigError, match="in place"):
        make_layer('name: "sp" type: "Split"').set_up([x], [x])

"""Input and DummyData: shapes from their parameters, fillers, refills, errors.
Neither has a backward."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.rng import set_random_seed

from .layer_test_template import forward, setup_layer

GRADIENT_CHECKED: set[str] = set()


# --- Input -----------------------------------------------------------------------------
def test_input_one_shape_for_all_tops():
    _, _, top = setup_layer('type: "Input" input_param { shape { dim: 2 dim: 3 dim: 4 } }', [], num_top=2)
    assert [t.shape for t in top] == [(2, 3, 4), (2, 3, 4)]


def test_input_shape_per_top_and_user_reshape_sticks():
    text = 'type: "Input" input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } }'
    layer, bottom, top = setup_layer(text, [], num_top=2)
    assert top[0].shape == (64, 1, 28, 28) and top[1].shape == (64,)
    top[0].reshape(10, 1, 28, 28)
    top[0].data[...] = 3.0
    forward(layer, bottom, top)
    assert top[0].shape == (10, 1, 28, 28) and np.all(top[0].data == 3.0)


def test_input_wrong_number_of_shapes():
    text = 'name: "data" type: "Input" input_param { shape { dim: 1 } shape { dim: 2 } }'
    with pytest.raises(NetConfigError, match="'data'.*2 shapes for 3 tops"):
        setup_layer(text, [], num_top=3)


def test_input_takes_no_bottom():
    with pytest.raises(NetConfigError, match="bottom"):
        setup_layer('type: "Input" input_param { shape { dim: 1 } }', [(2,)])


# --- DummyData -------------------------------------------------------------------------
def test_dummy_data_default_is_zeros_and_legacy_dims():
    text = (
        'type: "DummyData" dummy_data_param { num: 2 channels: 3 height: 4 width: 5 '
        "num: 1 channels: 1 height: 1 width: 7 }"
    )
    layer, bottom, top = setup_layer(text, [], num_top=2)
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (1, 1, 1, 7)
    forward(layer, bottom, top)
    assert np.all(top[0].data == 0) and np.all(top[1].data == 0)


def test_dummy_data_constant_fills_once_random_refills():
    text = (
        'type: "DummyData" dummy_data_param { shape { dim: 3 dim: 4 } '
        "data_filler { type: 'constant' value: 2.5 } data_filler { type: 'gaussian' std: 1 } }"
    )
    set_random_seed(0)
    layer, bottom, top = setup_layer(text, [], num_top=2)
    assert np.all(top[0].data == 2.5)  # constant: filled at set-up already
    forward(layer, bottom, top)
    first = top[1].data.copy()
    assert first.std() > 0.1
    top[0].data[...] = -1.0  # a constant top is not refilled (as in Caffe)
    forward(layer, bottom, top)
    assert np.all(top[0].data == -1.0)
    assert not np.array_equal(top[1].data, first)  # a random top is refilled every pass


def test_dummy_data_one_filler_for_all_tops():
    text = (
        "type: 'DummyData' dummy_data_param { shape { dim: 2 } shape { dim: 3 } "
        "data_filler { type: 'uniform' min: 5 max: 6 } }"
    )
    layer, bottom, top = setup_layer(text, [], num_top=2)
    forward(layer, bottom, top)
    for t in top:
        assert np.all((t.data >= 5) & (t.data <= 6))
    assert top[0].shape == (2,) and top[1].shape == (3,)


@pytest.mark.parametrize(
    "param,num_top,message",
    [
        ("shape { dim: 1 } data_filler {} data_filler {}", 3, "2 data_filler for 3 tops"),
        ("shape { dim: 1 } shape { dim: 2 }", 3, "'shape' once"),
        ("num: 1 channels: 1 height: 1", 1, "'width'"),
        ("num: 1 channels: 1 height: 1 width: 1 shape { dim: 1 }", 1, "not both"),
    ],
)
def test_dummy_data_errors(param, num_top, message):
    with pytest.raises(NetConfigError, match=f"'dummy'.*{message}"):
        setup_layer(f'name: "dummy" type: "DummyData" dummy_data_param {{ {param} }}', [], num_top=num_top)

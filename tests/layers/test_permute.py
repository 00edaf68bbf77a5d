"""Permute: SSD's order rule (unlisted axes follow), forward, gradient, errors."""

import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import forward, make_layer, setup_layer

GRADIENT_CHECKED = {"Permute"}


def permute(*order: int) -> str:
    listed = " ".join(f"order: {a}" for a in order)
    return f'name: "perm" type: "Permute" permute_param {{ {listed} }}'


@pytest.mark.parametrize("order,shape,axes", [
    ((1, 0), (2, 3, 4), (1, 0, 2)),
    ((1,), (2, 3, 4), (1, 0, 2)),         # unlisted axes follow in order
    ((0, 2, 3, 1), (2, 3, 4, 5), (0, 2, 3, 1)),  # NCHW -> NHWC, as SSD uses it
    ((), (2, 3), (0, 1)),                  # nothing listed: a copy
    ((2, 0, 1), (3, 1, 2), (2, 0, 1)),
])
def test_forward_is_numpy_transpose(order, shape, axes):
    layer, bottom, top = setup_layer(permute(*order), [shape])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data.transpose(axes))


@pytest.mark.parametrize("order,shape", [((1, 0), (3, 2, 2)), ((0, 2, 3, 1), (2, 3, 2, 2)), ((2,), (2, 3, 2))])
def test_gradient(order, shape):
    layer, bottom, top = setup_layer(permute(*order), [shape])
    check_gradient(layer, bottom, top, setup=False)


def test_rows_of_images_become_time_steps():
    layer, bottom, top = setup_layer(permute(1, 0), [(5, 28, 28)])
    forward(layer, bottom, top)
    assert top[0].shape == (28, 5, 28)
    np.testing.assert_array_equal(top[0].data[3, 2], bottom[0].data[2, 3])  # row 3 of image 2


def test_errors_name_the_layer():
    with pytest.raises(ShapeError, match=r"layer 'perm' \(Permute\): permute_param.order names axis 3 but the bottom "
                                         r"has 3 axes \(shape \(2, 3, 4\)\)"):
        setup_layer(permute(0, 3), [(2, 3, 4)])
    with pytest.raises(NetConfigError, match=r"layer 'perm' \(Permute\): permute_param.order \[1, 1\] repeats an axis"):
        setup_layer(permute(1, 1), [(2, 3, 4)])
    layer = make_layer(permute(1, 0))
    shared = Blob((2, 3))
    with pytest.raises(NetConfigError, match=r"layer 'perm' \(Permute\): Permute cannot run in place"):
        layer.set_up([shared], [shared])

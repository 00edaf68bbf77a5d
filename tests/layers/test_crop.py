"""Crop: Caffe's axis/offset rules, hand cases, gradient (reference bottom gets zero), errors."""
import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, setup_layer

GRADIENT_CHECKED = {"Crop"}


def crop(body: str = "") -> str:
    return f'name: "score" type: "Crop" crop_param {{ {body} }}'


@pytest.mark.parametrize("body,ref_shape,window", [
    ("", (2, 1, 3, 2), np.s_[:, :, 0:3, 0:2]),                               # axis 2, offsets 0
    ("offset: 1", (2, 1, 3, 2), np.s_[:, :, 1:4, 1:3]),                      # one offset for every cropped axis
    ("axis: 1 offset: 1 offset: 2 offset: 0", (2, 2, 3, 2), np.s_[:, 1:3, 2:5, 0:2]),
    ("axis: -1 offset: 3", (1, 1, 1, 2), np.s_[:, :, :, 3:5]),
    ("axis: 0 offset: 1", (1, 2, 2, 2), np.s_[1:2, 1:3, 1:3, 1:3]),
])
def test_forward_and_gradient(body, ref_shape, window):
    layer, bottom, top = setup_layer(crop(body), [(2, 3, 5, 5), ref_shape])
    forward(layer, bottom, top)
    expected = bottom[0].data[window]
    assert top[0].shape == expected.shape
    np.testing.assert_array_equal(top[0].data, expected)
    check_gradient(layer, bottom, top, setup=False)


def test_backward_by_hand_and_reference_gets_zero():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    layer, bottom, top = setup_layer(crop("offset: 1"), [x, np.zeros((1, 1, 2, 2))])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data[0, 0], [[5, 6], [9, 10]])
    bottom[0].diff[...] = 7
    bottom[1].diff[...] = 7
    backward(layer, bottom, top, [np.array([[[[1.0, 2.0], [3.0, 4.0]]]])], propagate_down=[True, True])
    expected = np.zeros((4, 4))
    expected[1:3, 1:3] = [[1, 2], [3, 4]]
    np.testing.assert_array_equal(bottom[0].diff[0, 0], expected)
    assert not bottom[1].diff.any()
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)


def test_reshapes_with_the_reference():
    layer, bottom, top = setup_layer(crop(), [(1, 2, 6, 6), (1, 1, 4, 4)])
    bottom[1].reshape(1, 1, 5, 3)
    forward(layer, bottom, top)
    assert top[0].shape == (1, 2, 5, 3)


@pytest.mark.parametrize("body,shapes,error,message", [
    ("offset: 3", [(1, 2, 5, 5), (1, 1, 3, 3)], ShapeError,
     r"cannot crop axis 2: 'bottom0' \(1, 2, 5, 5\) minus offset 3 is smaller than 'bottom1' \(1, 1, 3, 3\)"),
    ("offset: 1 offset: 1 offset: 1", [(1, 2, 5, 5), (1, 1, 3, 3)], NetConfigError,
     r"3 offsets given; give one for all cropped axes or one per cropped axis \(2: axes 2..3"),
    ("axis: 4", [(1, 2, 5, 5), (1, 1, 3, 3)], NetConfigError, "crop_param.axis 4 is out of range"),
    ("", [(1, 2, 5, 5), (3, 3)], ShapeError, r"reference bottom 'bottom1' \(3, 3\) has fewer axes than the data"),
    ("", [(1, 2, 5, 5), (1, 4, 3, 3)], ShapeError, "cannot crop axis 1"),  # Caffe checks uncropped axes too
])
def test_errors(body, shapes, error, message):
    with pytest.raises(error, match=r"layer 'score' \(Crop\): " + message):
        setup_layer(crop(body), shapes)

"""Bias and Scale: Caffe's broadcasting, learned or second-bottom operands, gradients, in place, errors."""

import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.net import Net
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, blob_from, forward, make_layer, random_blob, setup_layer

GRADIENT_CHECKED = {"Bias", "Scale"}

SHAPE = (2, 3, 4, 5)
GAUSS = 'filler { type: "gaussian" }'

# (axis, operand shape, how it broadcasts over SHAPE as numpy indexing)
BROADCASTS = [
    (0, (2, 3), (slice(None), slice(None), None, None)),
    (1, (3, 4), (None, slice(None), slice(None), None)),
    (2, (4, 5), (None, None, slice(None), slice(None))),
    (-2, (4, 5), (None, None, slice(None), slice(None))),
    (1, (), ()),
    (0, SHAPE, (slice(None),) * 4),
]


# --- Bias -----------------------------------------------------------------------------
def test_bias_learned_per_channel():
    layer, bottom, top = setup_layer(f'type: "Bias" bias_param {{ {GAUSS} }}', [SHAPE])
    assert layer.blobs[0].shape == (3,) and top[0].shape == SHAPE
    forward(layer, bottom, top)
    b = layer.blobs[0].data.astype(np.float64)
    np.testing.assert_allclose(top[0].data, bottom[0].data + b[None, :, None, None], rtol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_bias_default_filler_is_zero_and_shapes_from_num_axes():
    layer, _, _ = setup_layer('type: "Bias"', [SHAPE])
    np.testing.assert_array_equal(layer.blobs[0].data, 0)
    for num_axes, shape in [(-1, (3, 4, 5)), (0, ()), (2, (3, 4))]:
        layer, _, _ = setup_layer(f'type: "Bias" bias_param {{ num_axes: {num_axes} }}', [SHAPE])
        assert layer.blobs[0].shape == shape


@pytest.mark.parametrize("axis,shape,index", BROADCASTS)
def test_bias_second_bottom(axis, shape, index):
    layer, bottom, top = setup_layer(f'type: "Bias" bias_param {{ axis: {axis} }}', [SHAPE, shape])
    assert not layer.blobs
    forward(layer, bottom, top)
    expected = bottom[0].data.astype(np.float64) + bottom[1].data.astype(np.float64)[index]
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_bias_hand_case_and_bottom_diff_is_assigned():
    layer, bottom, top = setup_layer('type: "Bias"', [np.ones((2, 2, 1)), np.array([10.0, 20.0])])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data[:, :, 0], [[11, 21], [11, 21]])
    bottom[1].diff[...] = 99
    backward(layer, bottom, top, [np.array([[[1.0], [2.0]], [[3.0], [4.0]]])])
    np.testing.assert_array_equal(bottom[1].diff, [4.0, 6.0])
    np.testing.assert_array_equal(bottom[0].diff, top[0].diff)


# --- Scale ----------------------------------------------------------------------------
def test_scale_learned_with_bias():
    text = f'type: "Scale" scale_param {{ {GAUSS} bias_term: true bias_filler {{ type: "gaussian" }} }}'
    layer, bottom, top = setup_layer(text, [SHAPE])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    forward(layer, bottom, top)
    s, b = (blob.data.astype(np.float64)[None, :, None, None] for blob in layer.blobs)
    np.testing.assert_allclose(top[0].data, bottom[0].data * s + b, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_scale_defaults_are_identity():
    layer, bottom, top = setup_layer('type: "Scale" scale_param { bias_term: true }', [SHAPE])
    np.testing.assert_array_equal(layer.blobs[0].data, 1)
    np.testing.assert_array_equal(layer.blobs[1].data, 0)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)


@pytest.mark.parametrize("axis,shape,index", BROADCASTS)
def test_scale_second_bottom(axis, shape, index):
    layer, bottom, top = setup_layer(f'type: "Scale" scale_param {{ axis: {axis} }}', [SHAPE, shape])
    forward(layer, bottom, top)
    expected = bottom[0].data.astype(np.float64) * bottom[1].data.astype(np.float64)[index]
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_scale_second_bottom_with_learned_bias():
    text = 'type: "Scale" scale_param { axis: 1 bias_term: true bias_filler { type: "gaussian" } }'
    layer, bottom, top = setup_layer(text, [SHAPE, (3, 4)])
    assert [b.shape for b in layer.blobs] == [(3, 4)]
    forward(layer, bottom, top)
    expected = bottom[0].data * bottom[1].data[None, :, :, None] + layer.blobs[0].data[None, :, :, None]
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-6)
    check_gradient(layer, bottom, top, setup=False)


def test_scale_hand_case():
    layer, bottom, top = setup_layer('type: "Scale" scale_param { axis: 0 }', [np.array([[1.0, 2.0], [3.0, 4.0]]),
                                                                               np.array([2.0, -1.0])])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [[2.0, 4.0], [-3.0, -4.0]])
    backward(layer, bottom, top, [np.ones((2, 2))])
    np.testing.assert_array_equal(bottom[0].diff, [[2.0, 2.0], [-1.0, -1.0]])
    np.testing.assert_array_equal(bottom[1].diff, [3.0, 7.0])


@pytest.mark.parametrize("text", [
    f'type: "Scale" scale_param {{ {GAUSS} bias_term: true bias_filler {{ type: "gaussian" }} }}',
    f'type: "Bias" bias_param {{ {GAUSS} }}',
])
def test_in_place_matches_including_parameter_diffs(text):
    x = random_blob(SHAPE, seed=3).data.copy()
    dy = np.random.default_rng(4).uniform(-1, 1, SHAPE)

    def run(in_place):
        layer = make_layer(text)
        b = blob_from(x)
        t = b if in_place else Blob()
        from pycaffe_lite.rng import set_random_seed

        set_random_seed(1)  # same filled parameters both times
        layer.set_up([b], [t])
        forward(layer, [b], [t])
        y = t.data.copy()
        backward(layer, [b], [t], [dy])
        return y, b.diff.copy(), [p.diff.copy() for p in layer.blobs]

    y0, dx0, dp0 = run(False)
    y1, dx1, dp1 = run(True)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(dx1, dx0)
    for a, b in zip(dp1, dp0):
        np.testing.assert_array_equal(a, b)


def test_scale_in_place_in_a_net_after_convolution():
    text = ('layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 2 dim: 1 dim: 5 dim: 5 } '
            'shape { dim: 2 dim: 3 dim: 3 dim: 3 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 3 '
            'kernel_size: 3 weight_filler { type: "gaussian" } } }\n'
            'layer { name: "sc" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }\n'
            'layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "t" top: "loss" }\n')
    net = Net(text, phase=0)
    assert net.top_vecs[2][0] is net.bottom_vecs[2][0]
    rs = np.random.default_rng(0)
    net.blobs["x"].data[...] = rs.normal(size=(2, 1, 5, 5))
    net.blobs["t"].data[...] = rs.normal(size=(2, 3, 3, 3))
    net.forward_loss()
    net.backward()
    c_before_scale = net.layers[2]._saved
    dy = net.blobs["c"].data - net.blobs["t"].data  # loss gradient (scale 1, shift 0: c is unchanged)
    np.testing.assert_allclose(net.layers[2].blobs[0].diff, (dy * c_before_scale).sum(axis=(0, 2, 3)) / 2, rtol=1e-4)
    np.testing.assert_allclose(net.layers[2].blobs[1].diff, dy.sum(axis=(0, 2, 3)) / 2, rtol=1e-4)


def test_loads_caffe_scalar_and_legacy_blobs():
    layer = make_layer('name: "s" type: "Scale" scale_param { num_axes: 0 } blobs { data: 3 }')
    layer.set_up([Blob(SHAPE)], [Blob()])
    assert layer.blobs[0].shape == () and layer.blobs[0].data == 3


@pytest.mark.parametrize("text,bottoms,error,message", [
    ('type: "Bias"', [SHAPE, (3, 5)], ShapeError,
     r"bias 'bottom1' has shape \(3, 5\) but bottom 'bottom0' \(2, 3, 4, 5\) has \(3, 4\) at axes 1..2"),
    ('type: "Scale" scale_param { axis: 2 }', [SHAPE, (4, 5, 6)], ShapeError, r"scale 'bottom1' has shape"),
    ('type: "Bias" bias_param { num_axes: 4 }', [SHAPE], ShapeError, "a bias of 4 axes from axis 1 extends past"),
    ('type: "Scale" scale_param { num_axes: -2 }', [SHAPE], NetConfigError, "scale num_axes must be >= 0, or -1"),
    ('type: "Scale" scale_param { axis: 4 }', [SHAPE], NetConfigError, "scale axis 4 is out of range"),
])
def test_errors_name_layer_and_shapes(text, bottoms, error, message):
    with pytest.raises(error, match=r"layer '(bias|scale)' \((Bias|Scale)\): " + message):
        setup_layer(text, bottoms)

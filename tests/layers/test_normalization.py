"""BatchNorm and MVN: hand-computed statistics, Caffe's three stat blobs and scale factor,
use_global_stats defaults, lr_mult 0 on the statistics, caffemodel round trip, gradients
in both modes, in place, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.testing import check_gradient

from .layer_test_template import (
    assert_in_place_matches,
    backward,
    blob_from,
    forward,
    random_blob,
    setup_layer,
)

GRADIENT_CHECKED = {"BatchNorm", "MVN"}

EPS = 1e-5


def bn(extra: str = "", phase: str = "TRAIN") -> str:
    return f'name: "bn" type: "BatchNorm" phase: {phase} {extra}'


def bn_reference(x, mean=None, var=None, eps=EPS):
    """float64 batch norm over every axis but 1; batch statistics unless given."""
    x = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if mean is None:
        mean = x.mean(axis=axes)
        var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    return (x - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps)


# --- BatchNorm: statistics by hand ----------------------------------------------------
def test_batch_norm_two_train_forwards_by_hand():
    # One channel holding 1, 3, 5, 7: mean 4, biased variance 5, unbiased 20/3 (m = 4).
    x1 = np.array([[[1.0, 3.0]], [[5.0, 7.0]]])
    layer, bottom, top = setup_layer(bn(), [x1])
    assert [b.shape for b in layer.blobs] == [(1,), (1,), (1,)]
    assert all(np.all(b.data == 0) for b in layer.blobs)
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data.ravel(), (np.array([1, 3, 5, 7]) - 4) / np.sqrt(5 + EPS), rtol=1e-6)
    np.testing.assert_allclose([b.data[0] for b in layer.blobs], [4.0, 20 / 3, 1.0], rtol=1e-6)

    # 2, 2, 2, 6: mean 3, biased variance 3, unbiased 4.
    bottom[0].data[...] = [[[2.0, 2.0]], [[2.0, 6.0]]]
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data.ravel(), (np.array([2, 2, 2, 6]) - 3) / np.sqrt(3 + EPS), rtol=1e-6)
    f = 0.999
    s, sum_mean, sum_var = f * 1 + 1, f * 4 + 3, f * 20 / 3 + 4
    np.testing.assert_allclose([b.data[0] for b in layer.blobs], [sum_mean, sum_var, s], rtol=1e-6)
    mean, var = layer.statistics()
    np.testing.assert_allclose([mean[0], var[0]], [sum_mean / s, sum_var / s], rtol=1e-6)


def test_batch_norm_train_forward_and_blobs_against_float64():
    x = random_blob((4, 3, 2, 5), low=-2, high=3)
    layer, bottom, top = setup_layer(bn("batch_norm_param { moving_average_fraction: 0.9 eps: 1e-3 }"), [x])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, bn_reference(x.data, eps=1e-3), rtol=1e-5, atol=1e-5)
    xd = x.data.astype(np.float64)
    m = 4 * 2 * 5
    np.testing.assert_allclose(layer.blobs[0].data, xd.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, xd.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-5)
    assert layer.blobs[2].data[0] == 1


def test_batch_norm_global_stats_use_the_scale_factor():
    x = random_blob((3, 2, 4))
    layer, bottom, top = setup_layer(bn(phase="TEST"), [x])
    assert layer.use_global_stats
    # blob2 == 0 means "no statistics yet": mean 0 and variance 0.
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, x.data / np.sqrt(EPS), rtol=1e-5)
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    s = 7.5  # the stored sums are mean * s and var * s
    layer.blobs[0].data[...] = mean * s
    layer.blobs[1].data[...] = var * s
    layer.blobs[2].data[...] = s
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, bn_reference(x.data, mean, var), rtol=1e-5, atol=1e-6)
    before = [b.data.copy() for b in layer.blobs]
    forward(layer, bottom, top)
    for b, old in zip(layer.blobs, before):  # global statistics are never updated
        np.testing.assert_array_equal(b.data, old)


@pytest.mark.parametrize(
    "phase,extra,expected",
    [
        ("TRAIN", "", False),
        ("TEST", "", True),
        ("TRAIN", "batch_norm_param { use_global_stats: true }", True),
        ("TEST", "batch_norm_param { use_global_stats: false }", False),
    ],
)
def test_batch_norm_use_global_stats_default_follows_the_phase(phase, extra, expected):
    layer, _, _ = setup_layer(bn(extra, phase), [(2, 3)])
    assert layer.use_global_stats is expected


def test_batch_norm_one_item_has_no_bias_correction():
    # m = 1 value per channel: Caffe's correction factor is 1, not m / (m - 1).
    layer, bottom, top = setup_layer(bn(), [np.array([[2.0, -3.0]])])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, 0)
    np.testing.assert_array_equal(layer.blobs[0].data, [2.0, -3.0])
    np.testing.assert_array_equal(layer.blobs[1].data, 0)


# --- BatchNorm: the statistics are never learned ---------------------------------------
def test_batch_norm_sets_lr_mult_zero_itself():
    layer, _, _ = setup_layer(bn(), [(2, 3, 2)])
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]
    layer, _, _ = setup_layer(bn("param { lr_mult: 0 decay_mult: 0 }"), [(2, 3, 2)])
    assert [p.lr_mult for p in layer.layer_param.param] == [0, 0, 0]


def test_batch_norm_three_param_specs_are_upgraded_as_caffe_does():
    text = bn("param { name: 'm' lr_mult: 1 } param { name: 'v' lr_mult: 2 decay_mult: 3 } param { name: 's' }")
    layer, _, _ = setup_layer(text, [(2, 3)])
    assert [(p.name, p.lr_mult, p.decay_mult) for p in layer.layer_param.param] == [
        ("m", 0, 0), ("v", 0, 0), ("s", 0, 0)
    ]


def test_batch_norm_refuses_a_learned_statistic():
    with pytest.raises(NetConfigError, match=r"'bn'.*param 0 has lr_mult 1.*lr_mult: 0"):
        setup_layer(bn("param { decay_mult: 0 }"), [(2, 3)])  # lr_mult defaults to 1


NET = """
name: "bn_net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 2 dim: 3 dim: 3 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 4 dim: 3 dim: 3 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv" bottom: "target" top: "loss" }
"""


def test_net_sees_lr_mult_zero_on_the_statistics():
    net = Net(NET, phase=TRAIN)
    names = net.learnable_param_names
    lr = dict(zip(names, net.params_lr))
    assert lr["bn[0]"] == lr["bn[1]"] == lr["bn[2]"] == 0
    assert lr["conv[0]"] == 1
    net.forward_backward()
    assert all(np.all(b.diff == 0) for b in net.params["bn"])


def test_caffemodel_statistics_load_and_are_used(tmp_path):
    train = Net(NET, phase=TRAIN)
    rs = np.random.default_rng(3)
    train.blobs["data"].data[...] = rs.uniform(-1, 1, size=(4, 2, 3, 3))
    train.forward()
    train.forward()
    stored = [b.data.copy() for b in train.params["bn"]]
    assert [s.shape for s in stored] == [(3,), (3,), (1,)]
    np.testing.assert_allclose(stored[2], [1.999], rtol=1e-6)
    path = tmp_path / "bn.caffemodel"
    train.save(path)
    test = Net(NET, phase=TEST, weights=str(path))
    for b, s in zip(test.params["bn"], stored):
        np.testing.assert_array_equal(b.data, s)
    test.blobs["data"].data[...] = train.blobs["data"].data
    test.forward()
    conv = test.layer_dict["conv"]
    x = test.blobs["data"].data.reshape(4, 2, 9).astype(np.float64)
    W = conv.blobs[0].data.reshape(3, 2).astype(np.float64)
    y = np.einsum("oc,ncs->nos", W, x) + conv.blobs[1].data[None, :, None]
    expected = bn_reference(y, stored[0] / stored[2], stored[1] / stored[2])
    np.testing.assert_allclose(test.blobs["conv"].data.reshape(4, 3, 9), expected, rtol=1e-4, atol=1e-5)


# --- BatchNorm: gradients ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 2, 2, 2), (5, 3), (4,)])
def test_batch_norm_gradient_batch_statistics(shape):
    layer, bottom, top = setup_layer(bn(), [random_blob(shape, low=-2, high=2)])
    # The statistics blobs change in every TRAIN forward but the top does not depend on
    # them, so their checked gradient is 0 (backward leaves their diffs alone).
    check_gradient(layer, bottom, top, setup=False)


def test_batch_norm_gradient_global_statistics():
    layer, bottom, top = setup_layer(bn("batch_norm_param { use_global_stats: true }"), [(3, 2, 2, 2)])
    layer.blobs[0].data[...] = [0.6, -0.4]
    layer.blobs[1].data[...] = [3.0, 1.4]
    layer.blobs[2].data[...] = 2.0
    # Bottom only: Caffe computes no gradient for the statistics (they have lr_mult 0).
    check_gradient(layer, bottom, top, check_params=False, setup=False)
    forward(layer, bottom, top)
    backward(layer, bottom, top)
    std = np.sqrt(np.array([1.5, 0.7]) + EPS)[None, :, None, None]
    np.testing.assert_allclose(bottom[0].diff, top[0].diff / std, rtol=1e-6)


def test_batch_norm_in_place_matches_out_of_place():
    assert_in_place_matches(bn(), (3, 2, 2, 3))
    assert_in_place_matches(bn("batch_norm_param { use_global_stats: true }"), (3, 2, 2, 3))


def test_batch_norm_backward_survives_a_later_in_place_layer():
    layer, bottom, top = setup_layer(bn(), [(4, 2, 3)])
    forward(layer, bottom, top)
    backward(layer, bottom, top, seed=1)
    expected = bottom[0].diff.copy()
    top[0].data[...] = 123.0  # e.g. an in-place Scale or ReLU overwrote the top
    backward(layer, bottom, top, seed=1)
    np.testing.assert_array_equal(bottom[0].diff, expected)


def test_batch_norm_errors():
    layer, bottom, top = setup_layer(bn(), [(2, 3, 4)])
    bottom[0].reshape(2, 5, 4)
    with pytest.raises(ShapeError, match=r"'bn'.*\(2, 5, 4\) has 5 channels.*set up for 3"):
        forward(layer, bottom, top)
    with pytest.raises(ShapeError, match="'bn'.*scalar"):
        setup_layer(bn(), [blob_from(np.float32(1))])


# --- MVN ----------------------------------------------------------------------------------
def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    x = x.astype(np.float64)
    g = x.reshape(x.shape[0], -1) if across_channels else x.reshape(x.shape[0] * x.shape[1], -1)
    y = g - g.mean(axis=1, keepdims=True)
    if normalize_variance:
        y = y / (np.sqrt((y**2).mean(axis=1, keepdims=True)) + eps)
    return y.reshape(x.shape)


MVN_CASES = [
    ("", True, False),
    ("mvn_param { across_channels: true }", True, True),
    ("mvn_param { normalize_variance: false }", False, False),
    ("mvn_param { normalize_variance: false across_channels: true }", False, True),
]


@pytest.mark.parametrize("extra,normalize,across", MVN_CASES)
def test_mvn_forward(extra, normalize, across):
    x = random_blob((3, 2, 4, 5), low=-3, high=5)
    layer, bottom, top = setup_layer('name: "mvn" type: "MVN" ' + extra, [x])
    assert top[0].shape == x.shape
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, mvn_reference(x.data, normalize, across), rtol=1e-5, atol=1e-5)


def test_mvn_adds_eps_to_the_standard_deviation():
    # x = 1, 3: mean 2, std 1; Caffe divides by std + eps = 1.5, not sqrt(var + eps).
    layer, bottom, top = setup_layer('type: "MVN" mvn_param { eps: 0.5 }', [np.array([[[1.0, 3.0]]])])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data.ravel(), [-1 / 1.5, 1 / 1.5], rtol=1e-6)
    layer, bottom, top = setup_layer('type: "MVN"', [np.full((1, 1, 3), 4.0)])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, 0)  # constant input: 0 / eps


@pytest.mark.parametrize("extra,normalize,across", MVN_CASES)
def test_mvn_gradient(extra, normalize, across):
    layer, bottom, top = setup_layer('type: "MVN" ' + extra, [random_blob((2, 3, 2, 2), low=-2, high=2)])
    check_gradient(layer, bottom, top, setup=False)


def test_mvn_in_place_and_2d_input():
    assert_in_place_matches('type: "MVN"', (2, 3, 2, 2))
    layer, bottom, top = setup_layer('type: "MVN" mvn_param { across_channels: true }', [(4, 6)])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, mvn_reference(bottom[0].data, across_channels=True), rtol=1e-5, atol=1e-6)


def test_mvn_needs_a_channel_axis():
    with pytest.raises(ShapeError, match=r"'mvn'.*\(5,\).*across_channels"):
        setup_layer('name: "mvn" type: "MVN"', [(5,)])

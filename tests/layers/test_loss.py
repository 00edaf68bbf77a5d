"""SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss: values vs float64,
normalization modes, ignore_label, gradients (prediction bottom only, except
Euclidean), label errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, blob_from, forward, random_blob, setup_layer

GRADIENT_CHECKED = {"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss"}

FLT_MIN = float(np.finfo(np.float32).tiny)


def labels(shape, classes, seed=0, ignore=None, ignore_every=3):
    lab = np.random.default_rng(seed).integers(0, classes, size=shape).astype(np.float32)
    if ignore is not None:
        lab.reshape(-1)[::ignore_every] = ignore
    return lab


# --- SoftmaxWithLoss -------------------------------------------------------------------
def softmax_loss_reference(x, label, axis=1, ignore=None, mode="VALID"):
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    outer_inner = x.shape[:-1]
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    label = label.reshape(outer_inner).astype(int)
    valid = np.ones(outer_inner, bool) if ignore is None else label != ignore
    picked = np.take_along_axis(p, np.where(valid, label, 0)[..., None], -1)[..., 0]
    loss = -np.log(np.maximum(picked[valid], FLT_MIN)).sum()
    outer = int(np.prod(outer_inner[:axis]))
    n = {"FULL": np.prod(outer_inner), "VALID": valid.sum(), "BATCH_SIZE": outer, "NONE": 1}[mode]
    return loss / max(1, n)


SWL = 'name: "loss" type: "SoftmaxWithLoss" '


@pytest.mark.parametrize(
    "extra,mode,ignore",
    [
        ("", "VALID", None),
        ("loss_param { ignore_label: 2 }", "VALID", 2),
        ("loss_param { ignore_label: 2 normalization: FULL }", "FULL", 2),
        ("loss_param { ignore_label: 2 normalization: BATCH_SIZE }", "BATCH_SIZE", 2),
        ("loss_param { ignore_label: 2 normalization: NONE }", "NONE", 2),
        ("loss_param { ignore_label: 2 normalize: false }", "BATCH_SIZE", 2),
        ("loss_param { ignore_label: 2 normalize: true }", "VALID", 2),
        ("loss_param { normalize: false normalization: FULL }", "FULL", None),
    ],
)
def test_softmax_loss_forward(extra, mode, ignore):
    shape = (3, 4, 2, 3)
    lab = labels((3, 1, 2, 3), 4, ignore=ignore)
    layer, bottom, top = setup_layer(SWL + extra, [random_blob(shape, low=-3, high=3), lab])
    assert top[0].shape == ()
    loss = forward(layer, bottom, top)
    expected = softmax_loss_reference(bottom[0].data, lab, ignore=ignore, mode=mode)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5)
    assert loss == pytest.approx(float(top[0].data), rel=1e-7)  # loss_weight 1


def test_softmax_loss_axis_and_prob_top():
    x = random_blob((2, 3, 5), low=-2, high=2)
    lab = labels((2, 3), 5)
    layer, bottom, top = setup_layer(SWL + "softmax_param { axis: 2 }", [x, lab], num_top=2)
    assert top[1].shape == (2, 3, 5)
    assert layer.loss_weights == [1.0, 0.0]
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, softmax_loss_reference(x.data, lab, axis=2), rtol=1e-5)
    e = np.exp(x.data.astype(np.float64))
    np.testing.assert_allclose(top[1].data, e / e.sum(-1, keepdims=True), rtol=1e-5)


def test_softmax_loss_sums_in_caffes_float32_order():
    x = random_blob((64, 10), seed=5, low=-4, high=4)
    lab = labels((64,), 10, seed=6)
    layer, bottom, top = setup_layer(SWL, [x, lab])
    forward(layer, bottom, top)
    prob = layer.prob.data
    loss = np.float32(0)
    for i, c in enumerate(lab.astype(int)):
        loss = np.float32(loss - np.log(np.maximum(prob[i, c], np.float32(FLT_MIN))))
    assert top[0].data == loss / np.float32(64)


def test_softmax_loss_all_ignored_and_zero_probability():
    layer, bottom, top = setup_layer(
        SWL + "loss_param { ignore_label: -1 }", [(2, 3), np.array([-1.0, -1.0])]
    )
    forward(layer, bottom, top)
    assert top[0].data == 0  # normalizer max(1, 0) = 1
    backward(layer, bottom, top, [np.float32(1)])
    assert np.all(bottom[0].diff == 0)
    layer, bottom, top = setup_layer(SWL, [np.array([[0.0, 200.0]]), np.array([0.0])])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, -np.log(FLT_MIN), rtol=1e-6)  # p underflows to 0


@pytest.mark.parametrize(
    "extra,shape,label_shape",
    [
        ("loss_param { ignore_label: 1 }", (2, 3, 2, 2), (2, 1, 2, 2)),
        ("loss_param { normalization: BATCH_SIZE }", (3, 4), (3,)),
        ("softmax_param { axis: -1 } loss_param { normalization: FULL }", (2, 2, 3), (2, 2)),
    ],
)
def test_softmax_loss_gradient(extra, shape, label_shape):
    lab = labels(label_shape, shape[1] if "axis" not in extra else shape[-1], seed=3)
    if "ignore_label" in extra:
        lab.reshape(-1)[:2] = 1
    layer, bottom, top = setup_layer(SWL + extra, [random_blob(shape, low=-2, high=2), lab])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_softmax_loss_scales_by_loss_weight():
    layer, bottom, top = setup_layer(SWL, [(4, 3), labels((4,), 3)])
    forward(layer, bottom, top)
    backward(layer, bottom, top, [np.float32(1)])
    unit = bottom[0].diff.copy()
    backward(layer, bottom, top, [np.float32(2.5)])
    np.testing.assert_allclose(bottom[0].diff, 2.5 * unit, rtol=1e-6)
    np.testing.assert_allclose(unit.sum(axis=1), 0, atol=1e-6)  # p - onehot sums to 0


def test_softmax_loss_label_never_takes_a_gradient():
    layer, bottom, top = setup_layer(SWL, [(4, 3), labels((4,), 3)])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match="'loss'.*label"):
        backward(layer, bottom, top, propagate_down=[True, True])


def test_softmax_loss_label_count_error_names_both_shapes():
    with pytest.raises(ShapeError) as err:
        setup_layer(SWL, [(2, 3, 4), np.zeros((2, 3))])
    message = str(err.value)
    assert "'loss'" in message and "(2, 3, 4)" in message and "(2, 3)" in message and "8 labels" in message


def test_softmax_loss_first_dimension_error():
    with pytest.raises(ShapeError, match=r"'loss'.*\(4, 3\).*\(5,\).*first dimension"):
        setup_layer(SWL, [(4, 3), np.zeros(5)])


def test_softmax_loss_label_out_of_range_is_a_data_error():
    layer, bottom, top = setup_layer(SWL, [(2, 3), np.array([0.0, 3.0])])
    with pytest.raises(DataError, match="'loss'.*label 3.*3 classes"):
        forward(layer, bottom, top)


# --- EuclideanLoss ---------------------------------------------------------------------
EUC = 'name: "euc" type: "EuclideanLoss" '


def test_euclidean_forward():
    layer, bottom, top = setup_layer(EUC, [(4, 3, 2), (4, 6)])
    assert top[0].shape == ()
    forward(layer, bottom, top)
    a, b = bottom[0].data.astype(np.float64), bottom[1].data.astype(np.float64).reshape(4, 3, 2)
    np.testing.assert_allclose(top[0].data, ((a - b) ** 2).sum() / (2 * 4), rtol=1e-6)


def test_euclidean_gradient_both_bottoms():
    layer, bottom, top = setup_layer(EUC, [(3, 4), (3, 4)])
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)
    check_gradient(layer, bottom, top, setup=False)
    forward(layer, bottom, top)
    backward(layer, bottom, top, [np.float32(1)])
    np.testing.assert_array_equal(bottom[1].diff, -bottom[0].diff)


def test_euclidean_dimension_error():
    with pytest.raises(ShapeError) as err:
        setup_layer(EUC, [(4, 3), (4, 5)])
    message = str(err.value)
    assert "'euc'" in message and "(4, 3)" in message and "(4, 5)" in message


# --- SigmoidCrossEntropyLoss -----------------------------------------------------------
SCE = 'name: "sce" type: "SigmoidCrossEntropyLoss" '


def sce_reference(x, t, ignore=None, mode="BATCH_SIZE"):
    x, t = x.astype(np.float64).ravel(), t.astype(np.float64).ravel()
    valid = np.ones(x.size, bool) if ignore is None else t.astype(int) != ignore
    # log s(x) and log(1 - s(x)) without overflow
    log_s = -np.logaddexp(0, -x)
    log_1ms = -np.logaddexp(0, x)
    loss = -(t * log_s + (1 - t) * log_1ms)[valid].sum()
    n = {"BATCH_SIZE": 4, "VALID": valid.sum(), "FULL": x.size, "NONE": 1}[mode]
    return loss / max(1, n)


@pytest.mark.parametrize(
    "extra,mode,ignore",
    [
        ("", "BATCH_SIZE", None),  # Caffe's default for this layer
        ("loss_param { ignore_label: -1 }", "BATCH_SIZE", -1),
        ("loss_param { ignore_label: -1 normalization: VALID }", "VALID", -1),
        ("loss_param { ignore_label: -1 normalize: true }", "VALID", -1),
        ("loss_param { normalization: FULL }", "FULL", None),
        ("loss_param { normalization: NONE }", "NONE", None),
    ],
)
def test_sigmoid_cross_entropy_forward(extra, mode, ignore):
    x = random_blob((4, 5), low=-30, high=30)  # large |x|: the stable form must not overflow
    t = np.random.default_rng(1).uniform(0, 1, size=(4, 5)).astype(np.float32)
    if ignore is not None:
        t.reshape(-1)[::4] = ignore
    layer, bottom, top = setup_layer(SCE + extra, [x, t])
    assert top[0].shape == ()
    with np.errstate(over="raise"):
        forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, sce_reference(x.data, t, ignore, mode), rtol=1e-5)


@pytest.mark.parametrize("extra", ["", "loss_param { ignore_label: -1 normalization: VALID }"])
def test_sigmoid_cross_entropy_gradient(extra):
    t = np.random.default_rng(2).integers(0, 2, size=(3, 4)).astype(np.float32)
    if extra:
        t[0, :2] = -1
    layer, bottom, top = setup_layer(SCE + extra, [random_blob((3, 4), low=-3, high=3), t])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)
    if extra:
        forward(layer, bottom, top)
        backward(layer, bottom, top, [np.float32(1)], propagate_down=[True, False])
        assert np.all(bottom[0].diff[0, :2] == 0)


def test_sigmoid_cross_entropy_count_error_and_label_gradient():
    with pytest.raises(ShapeError) as err:
        setup_layer(SCE, [(2, 3), (2, 4)])
    assert "'sce'" in str(err.value) and "(2, 3)" in str(err.value) and "(2, 4)" in str(err.value)
    layer, bottom, top = setup_layer(SCE, [(2, 3), blob_from(np.ones((2, 3)))])
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match="label"):
        backward(layer, bottom, top, propagate_down=[True, True])

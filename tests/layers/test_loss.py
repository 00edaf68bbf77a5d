"""SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss, HingeLoss, MultinomialLogisticLoss,
InfogainLoss, ContrastiveLoss: values vs float64 and by hand, normalization modes,
ignore_label, gradients (prediction bottoms only, except Euclidean and Contrastive),
label errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, blob_from, forward, random_blob, setup_layer

GRADIENT_CHECKED = {
    "SoftmaxWithLoss",
    "EuclideanLoss",
    "SigmoidCrossEntropyLoss",
    "HingeLoss",
    "MultinomialLogisticLoss",
    "InfogainLoss",
    "ContrastiveLoss",
}

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


# --- HingeLoss -------------------------------------------------------------------------
HINGE = 'name: "hinge" type: "HingeLoss" '


def hinge_reference(x, label, norm="L1"):
    x = x.astype(np.float64).reshape(x.shape[0], -1)
    t = -np.ones_like(x)
    t[np.arange(x.shape[0]), label.astype(int)] = 1
    m = np.maximum(0, 1 - t * x)
    return (m if norm == "L1" else m**2).sum() / x.shape[0]


def off_the_hinge(shape, seed=0):
    """Scores in [-2, 2] at least 0.05 away from the kinks at +-1."""
    x = np.random.default_rng(seed).uniform(-2, 2, size=shape)
    near = np.abs(np.abs(x) - 1) < 0.05
    x[near] += 0.1 * np.sign(x[near])
    return x.astype(np.float32)


def test_hinge_by_hand():
    # label 2: margins max(0, 1 + 0.5), max(0, 1 - 0.2), max(0, 1 - 2) = 1.5, 0.8, 0
    x, label = np.array([[0.5, -0.2, 2.0]]), np.array([2.0])
    layer, bottom, top = setup_layer(HINGE, [x, label])
    assert forward(layer, bottom, top) == pytest.approx(2.3, rel=1e-6)
    layer, bottom, top = setup_layer(HINGE + "hinge_loss_param { norm: L2 }", [x, label])
    assert forward(layer, bottom, top) == pytest.approx(2.89, rel=1e-6)
    backward(layer, bottom, top, [np.float32(1)])
    np.testing.assert_allclose(bottom[0].diff, [[3.0, 1.6, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_forward_and_gradient(norm):
    x = off_the_hinge((4, 3, 2))
    label = labels((4,), 6, seed=2)
    layer, bottom, top = setup_layer(HINGE + f"hinge_loss_param {{ norm: {norm} }}", [x, label])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, hinge_reference(x, label, norm), rtol=1e-5)
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_hinge_errors():
    with pytest.raises(ShapeError, match=r"'hinge'.*one label per item \(4 labels\)"):
        setup_layer(HINGE, [(4, 3), np.zeros((4, 2))])
    layer, bottom, top = setup_layer(HINGE, [(2, 3), np.array([0.0, 3.0])])
    with pytest.raises(DataError, match="'hinge'.*label 3 is out of range for 3 classes"):
        forward(layer, bottom, top)
    layer, bottom, top = setup_layer(HINGE, [(2, 3), np.array([0.0, 2.0])])
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match="'hinge'.*label"):
        backward(layer, bottom, top, propagate_down=[True, True])


# --- MultinomialLogisticLoss -----------------------------------------------------------
MLL = 'name: "mll" type: "MultinomialLogisticLoss" '


def test_multinomial_logistic_forward_and_threshold():
    p = np.random.default_rng(4).uniform(0.05, 1, size=(5, 4)).astype(np.float32)
    label = labels((5,), 4, seed=5)
    layer, bottom, top = setup_layer(MLL, [p, label.reshape(5, 1, 1, 1)])
    forward(layer, bottom, top)
    expected = -np.log(p.astype(np.float64)[np.arange(5), label.astype(int)]).sum() / 5
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-6)
    # p = 0 is floored at kLOG_THRESHOLD = 1e-20
    layer, bottom, top = setup_layer(MLL, [np.array([[0.0, 1.0]]), np.array([0.0])])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, -np.log(np.float32(1e-20)), rtol=1e-6)


def test_multinomial_logistic_gradient():
    p = np.random.default_rng(6).uniform(0.2, 1, size=(3, 2, 2)).astype(np.float32)
    layer, bottom, top = setup_layer(MLL, [p, labels((3,), 4, seed=7)])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_multinomial_logistic_errors():
    with pytest.raises(ShapeError, match=r"'mll'.*\(3, 2\).*\(N,\) or \(N, 1, 1, 1\)"):
        setup_layer(MLL, [(3, 4), np.zeros((3, 2))])
    layer, bottom, top = setup_layer(MLL, [(2, 3), np.array([-1.0, 0.0])])
    with pytest.raises(DataError, match="'mll'.*label -1 is out of range"):
        forward(layer, bottom, top)


# --- InfogainLoss ----------------------------------------------------------------------
INFO = 'name: "info" type: "InfogainLoss" '


def infogain_reference(x, label, H, axis=1, ignore=None, mode="VALID"):
    x = np.moveaxis(x.astype(np.float64), axis, -1)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    label = label.reshape(x.shape[:-1]).astype(int)
    valid = np.ones(label.shape, bool) if ignore is None else label != ignore
    rows = H.astype(np.float64)[np.where(valid, label, 0)]
    loss = -(rows * np.log(np.maximum(p, 1e-20)))[valid].sum()
    n = {"VALID": valid.sum(), "FULL": label.size, "BATCH_SIZE": int(np.prod(x.shape[:axis])), "NONE": 1}[mode]
    return loss / max(1, n)


def infogain_matrix(k, seed=0):
    return np.random.default_rng(seed).uniform(0, 2, size=(k, k)).astype(np.float32)


def write_blobproto(path, array):
    from pycaffe_lite.proto import caffe_pb2

    proto = caffe_pb2.BlobProto()
    proto.num, proto.channels = 1, 1
    proto.height, proto.width = array.shape
    proto.data.extend(array.ravel().tolist())
    path.write_bytes(proto.SerializeToString())


def test_infogain_identity_is_softmax_with_loss():
    x = random_blob((4, 5), low=-3, high=3)
    lab = labels((4,), 5, seed=1)
    layer, bottom, top = setup_layer(INFO, [x, lab, np.eye(5, dtype=np.float32)])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, softmax_loss_reference(x.data, lab), rtol=1e-5)


@pytest.mark.parametrize(
    "extra,shape,label_shape,axis,ignore,mode",
    [
        ("", (3, 4), (3,), 1, None, "VALID"),
        ("loss_param { ignore_label: 1 }", (2, 3, 2, 2), (2, 1, 2, 2), 1, 1, "VALID"),
        ("infogain_loss_param { axis: -1 } loss_param { normalization: FULL }", (2, 3, 4), (2, 3), 2, None, "FULL"),
        ("loss_param { ignore_label: 0 normalization: BATCH_SIZE }", (2, 3, 2), (2, 2), 1, 0, "BATCH_SIZE"),
    ],
)
def test_infogain_forward_and_gradient(extra, shape, label_shape, axis, ignore, mode):
    k = shape[axis]
    H = infogain_matrix(k, seed=2)
    x = random_blob(shape, low=-2, high=2)
    lab = labels(label_shape, k, seed=3)
    if ignore is not None:
        lab.reshape(-1)[:2] = ignore
    layer, bottom, top = setup_layer(INFO + extra, [x, lab, H], num_top=2)
    assert layer.loss_weights == [1.0, 0.0] and top[1].shape == shape
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, infogain_reference(x.data, lab, H, axis, ignore, mode), rtol=1e-5)
    e = np.exp(np.moveaxis(x.data.astype(np.float64), axis, -1))
    np.testing.assert_allclose(np.moveaxis(top[1].data, axis, -1), e / e.sum(-1, keepdims=True), rtol=1e-5)
    # the probability top is an output only (its diff is not back-propagated, as in Caffe)
    layer, bottom, top = setup_layer(INFO + extra, [x, lab, H])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_infogain_matrix_from_a_binaryproto(tmp_path, monkeypatch):
    H = infogain_matrix(3, seed=4)
    write_blobproto(tmp_path / "H.binaryproto", H)
    monkeypatch.chdir(tmp_path)  # the source is relative to the working folder, as in Caffe
    x, lab = random_blob((4, 3), low=-2, high=2), labels((4,), 3, seed=5)
    layer, bottom, top = setup_layer(INFO + 'infogain_loss_param { source: "H.binaryproto" }', [x, lab])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, infogain_reference(x.data, lab, H), rtol=1e-5)
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_infogain_errors(tmp_path):
    with pytest.raises(NetConfigError, match="'info'.*infogain_loss_param.*source.*third bottom"):
        setup_layer(INFO, [(2, 3), labels((2,), 3)])
    with pytest.raises(DataError, match="'info'.*cannot read the infogain matrix 'nowhere.binaryproto'"):
        setup_layer(INFO + 'infogain_loss_param { source: "nowhere.binaryproto" }', [(2, 3), labels((2,), 3)])
    write_blobproto(tmp_path / "H2.binaryproto", np.eye(2, dtype=np.float32))
    with pytest.raises(ShapeError, match=r"'info'.*H2.binaryproto' \(shape \(1, 1, 2, 2\)\) has 4 values; 3 classes need 3x3"):
        setup_layer(INFO + f'infogain_loss_param {{ source: "{tmp_path / "H2.binaryproto"}" }}', [(2, 3), labels((2,), 3)])
    with pytest.raises(ShapeError, match=r"'info'.*bottom\[2\] \(shape \(4,\)\) has 4 values; 3 classes"):
        setup_layer(INFO, [(2, 3), labels((2,), 3), np.ones(4)])
    with pytest.raises(NetConfigError, match="'info'.*normalize is not accepted.*normalization"):
        setup_layer(INFO + "loss_param { normalize: true }", [(2, 3), labels((2,), 3), np.eye(3)])
    with pytest.raises(ShapeError, match="'info'.*must be 4 labels"):
        setup_layer(INFO, [(2, 3, 2), labels((2,), 3), np.eye(3)])
    layer, bottom, top = setup_layer(INFO, [(2, 3), labels((2,), 3), np.eye(3)])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match="'info'.*infogain matrix"):
        backward(layer, bottom, top, propagate_down=[True, False, True])


# --- ContrastiveLoss -------------------------------------------------------------------
CONTRAST = 'name: "contrast" type: "ContrastiveLoss" '


def test_contrastive_by_hand():
    # distances 5 (similar) and 0.5 (dissimilar), margin 1
    a = np.zeros((2, 2))
    b = np.array([[3.0, 4.0], [0.3, 0.4]])
    y = np.array([1.0, 0.0])
    layer, bottom, top = setup_layer(CONTRAST, [a, b, y])
    assert forward(layer, bottom, top) == pytest.approx((25 + 0.5**2) / 4, rel=1e-6)
    layer, bottom, top = setup_layer(CONTRAST + "contrastive_loss_param { legacy_version: true }", [a, b, y])
    assert forward(layer, bottom, top) == pytest.approx((25 + (1 - 0.25)) / 4, rel=1e-6)


def pairs(distances, channels=3, seed=0):
    """Feature pairs (N, C, 1, 1) at the given distances."""
    rs = np.random.default_rng(seed)
    a = rs.uniform(-1, 1, size=(len(distances), channels))
    direction = rs.normal(size=a.shape)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    b = a + direction * np.asarray(distances)[:, None]
    return a.reshape(-1, channels, 1, 1).astype(np.float32), b.reshape(-1, channels, 1, 1).astype(np.float32)


def contrastive_reference(a, b, y, margin, legacy):
    d2 = ((a.astype(np.float64) - b) ** 2).reshape(len(y), -1).sum(1)
    dissimilar = np.maximum(margin - d2, 0) if legacy else np.maximum(margin - np.sqrt(d2), 0) ** 2
    return np.where(y != 0, d2, dissimilar).sum() / (2 * len(y))


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_forward_and_gradient(legacy):
    # dissimilar pairs both inside and outside the margin, away from the kink at d = m (d^2 = m)
    a, b = pairs([0.5, 1.2, 3.0, 0.8, 1.1, 2.6])
    y = np.array([1, 0, 0, 0, 1, 0], np.float32)
    text = CONTRAST + f"contrastive_loss_param {{ margin: 2 legacy_version: {str(legacy).lower()} }}"
    layer, bottom, top = setup_layer(text, [a, b, y])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, contrastive_reference(a, b, y, 2.0, legacy), rtol=1e-5)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    # Caffe's dissimilar gradient divides by d + 1e-4: a relative error 1e-4 / d < the threshold
    check_gradient(layer, bottom, top, check_bottom=[0, 1], setup=False)


def test_contrastive_2d_features_and_errors():
    layer, bottom, top = setup_layer(CONTRAST, [(3, 4), (3, 4), np.array([1.0, 0.0, 1.0])])
    forward(layer, bottom, top)
    with pytest.raises(ShapeError, match=r"'contrast'.*\(3, 4\).*\(3, 5\).*one shape"):
        setup_layer(CONTRAST, [(3, 4), (3, 5), np.zeros(3)])
    with pytest.raises(ShapeError, match=r"'contrast'.*\(3, 2, 2\).*\(N, C\) or \(N, C, 1, 1\)"):
        setup_layer(CONTRAST, [(3, 2, 2), (3, 2, 2), np.zeros(3)])
    with pytest.raises(ShapeError, match=r"'contrast'.*bottom\[2\].*\(3, 2\).*N = 3"):
        setup_layer(CONTRAST, [(3, 4), (3, 4), np.zeros((3, 2))])
    with pytest.raises(NetConfigError, match="'contrast'.*similarity"):
        backward(layer, bottom, top, propagate_down=[True, True, True])

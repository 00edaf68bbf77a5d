"""Accuracy: top-k vs a float64 reference, Caffe's tie rule, ignore_label, per-class
top, axis, errors.  No gradient (it is exempt in test_gradient_coverage)."""

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, NetConfigError, ShapeError

from .layer_test_template import backward, forward, random_blob, setup_layer

GRADIENT_CHECKED: set[str] = set()

ACC = 'name: "acc" type: "Accuracy" '


def reference(x, label, top_k, axis=1, ignore=None):
    """Correct when fewer than top_k *other* classes score >= the true class."""
    x = np.moveaxis(x.astype(np.float64), axis, -1).reshape(-1, x.shape[axis])
    label = label.ravel().astype(int)
    correct = counted = 0
    per_hit, per_num = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for scores, lab in zip(x, label, strict=True):
        if lab == ignore:
            continue
        counted += 1
        per_num[lab] += 1
        if (scores >= scores[lab]).sum() - 1 < top_k:
            correct += 1
            per_hit[lab] += 1
    per_class = np.divide(per_hit, per_num, out=np.zeros_like(per_hit), where=per_num > 0)
    return (correct / counted if counted else 0.0), per_class


@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_top_k_forward(top_k):
    x = random_blob((40, 6))
    lab = np.random.default_rng(1).integers(0, 6, size=40).astype(np.float32)
    layer, bottom, top = setup_layer(ACC + f"accuracy_param {{ top_k: {top_k} }}", [x, lab], num_top=2)
    assert top[0].shape == () and top[1].shape == (6,)
    assert layer.loss_weights == [0.0, 0.0]
    forward(layer, bottom, top)
    acc, per_class = reference(x.data, lab, top_k)
    assert top[0].data == pytest.approx(acc, rel=1e-6)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-6)


def test_ties_count_against_the_label():
    x = np.array([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [1.0, 3.0, 1.0]])
    lab = np.array([0.0, 0.0, 2.0])
    layer, bottom, top = setup_layer(ACC, [x, lab])
    forward(layer, bottom, top)
    # row 0: a tie with class 1 -> wrong at top-1; row 1: strictly best -> right;
    # row 2: two classes score >= the label's -> wrong
    assert top[0].data == pytest.approx(1 / 3)
    layer, bottom, top = setup_layer(ACC + "accuracy_param { top_k: 2 }", [x, lab])
    forward(layer, bottom, top)
    assert top[0].data == pytest.approx(2 / 3)  # row 0 right at top-2; row 2 still wrong


def test_ignore_label_and_spatial_axis():
    x = random_blob((2, 4, 3, 2))
    lab = np.random.default_rng(2).integers(0, 4, size=(2, 1, 3, 2)).astype(np.float32)
    lab.reshape(-1)[::3] = 255
    layer, bottom, top = setup_layer(ACC + "accuracy_param { ignore_label: 255 }", [x, lab], num_top=2)
    forward(layer, bottom, top)
    acc, per_class = reference(x.data, lab, 1, ignore=255)
    assert top[0].data == pytest.approx(acc, rel=1e-6)
    np.testing.assert_allclose(top[1].data, per_class, rtol=1e-6)


def test_last_axis():
    x = random_blob((3, 2, 5))
    lab = np.random.default_rng(3).integers(0, 5, size=(3, 2)).astype(np.float32)
    layer, bottom, top = setup_layer(ACC + "accuracy_param { axis: -1 }", [x, lab])
    forward(layer, bottom, top)
    assert top[0].data == pytest.approx(reference(x.data, lab, 1, axis=2)[0], rel=1e-6)


def test_every_label_ignored_gives_zero():
    layer, bottom, top = setup_layer(ACC + "accuracy_param { ignore_label: 0 }", [(3, 2), np.zeros(3)])
    forward(layer, bottom, top)
    assert top[0].data == 0


def test_no_gradient():
    layer, bottom, top = setup_layer(ACC, [(3, 2), np.zeros(3)])
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    forward(layer, bottom, top)
    backward(layer, bottom, top, propagate_down=[False, False])  # nothing asked: fine
    with pytest.raises(NetConfigError, match="'acc'.*no gradient"):
        backward(layer, bottom, top, propagate_down=[True, False])


def test_label_count_error_names_both_shapes():
    with pytest.raises(ShapeError) as err:
        setup_layer(ACC, [(4, 3, 2), np.zeros(4)])
    message = str(err.value)
    assert "'acc'" in message and "(4, 3, 2)" in message and "(4,)" in message


def test_top_k_larger_than_classes():
    with pytest.raises(NetConfigError, match="'acc'.*top_k 4.*classes 3"):
        setup_layer(ACC + "accuracy_param { top_k: 4 }", [(2, 3), np.zeros(2)])


def test_label_out_of_range():
    layer, bottom, top = setup_layer(ACC, [(2, 3), np.array([1.0, 7.0])])
    with pytest.raises(DataError, match="'acc'.*label 7"):
        forward(layer, bottom, top)

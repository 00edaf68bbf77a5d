"""SoftmaxWithLoss and Softmax through the Numba kernels of pycaffe_lite/kernels/softmax_loss.py:
kernels and layers against a float64 NumPy reference on random (outer, C, inner) shapes
(size-1 and odd included), ignore_label present and absent, every normalization mode,
gradients, label truncation and errors, the shape-change path of reshape, the probability top.

Runs the same way with ``NUMBA_DISABLE_JIT=1`` (pure Python kernels; the last test does that).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from pycaffe_lite.errors import DataError
from pycaffe_lite.kernels import softmax_loss as k
from pycaffe_lite.layers import loss as loss_layers
from pycaffe_lite.testing import check_gradient
from tests.conftest import ROOT

from .layer_test_template import backward, forward, random_blob, setup_layer

GRADIENT_CHECKED = {"SoftmaxWithLoss"}

FLT_MIN = float(np.finfo(np.float32).tiny)
SWL = 'name: "loss" type: "SoftmaxWithLoss" '
NORMALIZATION = {  # loss_param fields -> the mode they mean
    "": "VALID",
    "normalization: FULL": "FULL",
    "normalization: VALID": "VALID",
    "normalization: BATCH_SIZE": "BATCH_SIZE",
    "normalization: NONE": "NONE",
    "normalize: true": "VALID",
    "normalize: false": "BATCH_SIZE",
}
# (outer, C, inner): size-1 axes, odd sizes, a LeNet-like row
SHAPES = [(1, 1, 1), (1, 3, 1), (3, 1, 2), (5, 7, 3), (2, 4, 9), (64, 10, 1), (1, 6, 11)]


def reference(x3, label, ignore=None, mode="VALID"):
    """float64 softmax over axis 1 of (outer, C, inner), the loss and its gradient (weight 1)."""
    x = x3.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    outer, _, inner = x.shape
    lab = label.reshape(outer, inner).astype(np.int64)
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    safe = np.where(valid, lab, 0)
    picked = np.take_along_axis(p, safe[:, None, :], axis=1)[:, 0, :]
    total = -np.log(np.maximum(picked[valid], FLT_MIN)).sum()
    n = {"FULL": outer * inner, "VALID": int(valid.sum()), "BATCH_SIZE": outer, "NONE": 1}[mode]
    n = max(1, n)
    grad = p.copy()
    np.put_along_axis(grad, safe[:, None, :], np.take_along_axis(grad, safe[:, None, :], axis=1) - 1, axis=1)
    grad *= valid[:, None, :]
    return p, total / n, grad / n


def random_case(shape, seed, ignore=None):
    rng = np.random.default_rng(seed)
    outer, channels, inner = shape
    x = rng.uniform(-4, 4, size=shape).astype(np.float32)
    label = rng.integers(0, channels, size=outer * inner).astype(np.float32)
    if ignore is not None:
        label[::3] = ignore
    return x, label


def test_kernel_modes_are_the_proto_enum():
    assert (k.FULL, k.VALID, k.BATCH_SIZE, k.NONE) == (
        loss_layers.FULL, loss_layers.VALID, loss_layers.BATCH_SIZE, loss_layers.NONE)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ignore", [None, 1, -1])
@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_kernels_match_float64(shape, ignore, mode):
    x, label = random_case(shape, seed=sum(shape), ignore=ignore)
    p_ref, loss_ref, grad_ref = reference(x, label, ignore, mode)
    outer, channels, inner = shape
    ignore_label = k.NO_IGNORE_LABEL if ignore is None else ignore
    prob = np.full(x.size, np.nan, np.float32)
    picked = np.full(outer * inner, np.nan, np.float32)
    assert k.softmax_loss_forward(x.reshape(-1), label, outer, channels, inner, ignore_label, prob, picked) == -1
    np.testing.assert_allclose(prob.reshape(shape), p_ref, rtol=1e-5, atol=1e-7)
    np.log(picked, out=picked)
    loss, normalizer = np.zeros((), np.float32), np.zeros(1, np.float32)
    k.softmax_loss_sum(picked, outer, inner, getattr(k, mode), loss, normalizer)
    np.testing.assert_allclose(loss, loss_ref, rtol=1e-5, atol=1e-7)
    dx = np.full(x.size, np.nan, np.float32)
    k.softmax_loss_backward(prob, label, outer, channels, inner, ignore_label, np.float32(1) / normalizer[0], dx)
    np.testing.assert_allclose(dx.reshape(shape), grad_ref, rtol=1e-5, atol=1e-7)
    y = np.full(x.size, np.nan, np.float32)  # the plain softmax kernel: same probabilities
    k.softmax_forward(x.reshape(-1), outer, channels, inner, y)
    np.testing.assert_array_equal(y, prob)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (2, 4, 9)])
def test_softmax_kernels_in_place(shape):
    x, _ = random_case(shape, seed=4)
    y = np.empty_like(x.reshape(-1))
    k.softmax_forward(x.reshape(-1), *shape, y)
    inplace = x.reshape(-1).copy()
    k.softmax_forward(inplace, *shape, inplace)
    np.testing.assert_array_equal(inplace, y)
    dy = np.random.default_rng(5).uniform(-1, 1, size=y.size).astype(np.float32)
    dx = np.empty_like(dy)
    k.softmax_backward(y, dy, *shape, dx)
    y64 = y.reshape(shape).astype(np.float64)
    dy64 = dy.reshape(shape).astype(np.float64)
    expected = (dy64 - (dy64 * y64).sum(axis=1, keepdims=True)) * y64
    np.testing.assert_allclose(dx.reshape(shape), expected, rtol=1e-5, atol=1e-6)
    k.softmax_backward(y, dy, *shape, dy)  # in place: bottom diff is top diff
    np.testing.assert_array_equal(dy, dx)


def layer_case(loss_fields, x_shape, axis, ignore, seed=0, extra=""):
    """A SoftmaxWithLoss prototxt and random scores of ``x_shape`` with labels for ``axis``
    (every fourth label ``ignore`` when given)."""
    x = random_blob(x_shape, seed=seed, low=-3, high=3)
    a = axis % len(x_shape)
    lab = np.random.default_rng(seed + 1).integers(0, x_shape[a], size=x_shape[:a] + x_shape[a + 1:])
    lab = lab.astype(np.float32)
    if ignore is not None:
        lab.reshape(-1)[1::4] = ignore
        loss_fields += f" ignore_label: {ignore}"
    text = SWL + extra + f" loss_param {{ {loss_fields} }} softmax_param {{ axis: {axis} }}"
    return text, x, lab


def as_3d(x, axis):
    outer = int(np.prod(x.shape[:axis]))
    return x.reshape(outer, x.shape[axis], -1)


@pytest.mark.parametrize("fields", list(NORMALIZATION))
@pytest.mark.parametrize("x_shape,axis", [((3, 4, 2, 3), 1), ((2, 3, 5), 2), ((4, 6), -1), ((2, 5, 1, 1), 1)])
@pytest.mark.parametrize("ignore", [None, 2])
def test_layer_matches_float64(fields, x_shape, axis, ignore):
    text, x, lab = layer_case(fields, x_shape, axis, ignore)
    layer, bottom, top = setup_layer(text, [x, lab], num_top=2)
    loss = forward(layer, bottom, top)
    axis %= len(x_shape)
    p_ref, loss_ref, grad_ref = reference(as_3d(x.data, axis), lab, ignore, NORMALIZATION[fields])
    np.testing.assert_allclose(top[0].data, loss_ref, rtol=1e-5, atol=1e-7)
    assert loss == pytest.approx(float(top[0].data), rel=1e-7)
    np.testing.assert_allclose(as_3d(top[1].data, axis), p_ref, rtol=1e-5, atol=1e-7)
    backward(layer, bottom, top, [np.float32(0.5), np.zeros(x_shape, np.float32)])
    np.testing.assert_allclose(as_3d(bottom[0].diff, axis), 0.5 * grad_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "fields,x_shape,axis,ignore",
    [
        ("normalization: FULL", (2, 3, 3, 2), 1, 0),
        ("normalization: VALID", (3, 2, 4), 2, None),
        ("normalize: false", (2, 4, 3), 1, 3),
        ("normalization: NONE", (4, 5), 1, None),
    ],
)
def test_gradient(fields, x_shape, axis, ignore):
    text, x, lab = layer_case(fields, x_shape, axis, ignore, seed=3)
    layer, bottom, top = setup_layer(text, [x, lab])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_loss_weight_scales_loss_and_gradient():
    text, x, lab = layer_case("", (5, 4), 1, None, extra="loss_weight: 3")
    layer, bottom, top = setup_layer(text, [x, lab])
    loss = forward(layer, bottom, top)
    _, loss_ref, grad_ref = reference(as_3d(x.data, 1), lab)
    assert loss == pytest.approx(3 * loss_ref, rel=1e-5)
    layer.run_backward(top, [True, False], bottom)  # top diff = loss_weight, set by run_forward
    np.testing.assert_allclose(bottom[0].diff, 3 * grad_ref.reshape(5, 4), rtol=1e-5, atol=1e-7)


def test_shape_changes_between_passes():
    """A new batch size takes reshape's full path; the same shape again keeps every buffer."""
    text, x, lab = layer_case("", (6, 5), 1, None)
    layer, bottom, top = setup_layer(text, [x, lab], num_top=2)
    forward(layer, bottom, top)
    buffers = (layer._prob_flat, layer._log_picked)
    forward(layer, bottom, top)
    assert buffers[0] is layer._prob_flat and buffers[1] is layer._log_picked
    for n in (9, 2, 6):
        _, x2, lab2 = layer_case("", (n, 5), 1, None, seed=n)
        bottom[0].reshape(x2.shape)
        bottom[0].data[...] = x2.data
        bottom[1].reshape(lab2.shape)
        bottom[1].data[...] = lab2
        forward(layer, bottom, top)
        p_ref, loss_ref, grad_ref = reference(as_3d(x2.data, 1), lab2)
        np.testing.assert_allclose(top[0].data, loss_ref, rtol=1e-5)
        assert top[1].shape == (n, 5)
        np.testing.assert_allclose(top[1].data, p_ref[:, :, 0], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(top[1].data, layer.prob.data)
        layer.run_backward(top, [True, False], bottom)
        np.testing.assert_allclose(bottom[0].diff, grad_ref[:, :, 0], rtol=1e-5, atol=1e-7)


def test_labels_truncate_toward_zero_like_a_c_cast():
    x = random_blob((4, 3), low=-2, high=2)
    truncated = np.array([0.0, 1.0, 2.0, 0.0], np.float32)
    layer, bottom, top = setup_layer(SWL, [x, np.array([0.2, 1.9, 2.99, -0.7])])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, reference(as_3d(x.data, 1), truncated)[1], rtol=1e-5)


def test_ignored_label_may_be_out_of_range_and_all_ignored_gives_zero():
    layer, bottom, top = setup_layer(SWL + "loss_param { ignore_label: 255 }", [(3, 4), np.array([1.0, 255.0, 3.0])])
    forward(layer, bottom, top)
    _, loss_ref, _ = reference(as_3d(bottom[0].data, 1), bottom[1].data, ignore=255)
    np.testing.assert_allclose(top[0].data, loss_ref, rtol=1e-5)
    bottom[1].data[...] = 255
    forward(layer, bottom, top)
    assert top[0].data == 0 and layer.normalizer == 1


@pytest.mark.parametrize(
    "extra,labels,message",
    [
        ("", [0.0, -1.0], r"'loss'.*label -1 is out of range for 3 classes \(labels must be integers in \[0, 3\)\)"),
        ("loss_param { ignore_label: 7 }", [5.0, 1.0],
         r"'loss'.*label 5 is out of range for 3 classes.*or the ignore_label 7\)"),
        ("", [1.0, 3.5], r"'loss'.*label 3 is out of range"),
        ("", [np.nan, 0.0], r"'loss'.*label nan is out of range"),
        ("", [1.0, -1e30], r"'loss'.*label -1e\+30 is out of range"),
    ],
)
def test_label_errors_name_the_layer_and_the_value(extra, labels, message):
    layer, bottom, top = setup_layer(SWL + extra, [(2, 3), np.array(labels)])
    with pytest.raises(DataError, match=message):
        forward(layer, bottom, top)


def test_nan_scores_give_a_nan_loss_as_in_caffe():
    x = random_blob((3, 4))
    x.data[1, 2] = np.nan
    layer, bottom, top = setup_layer(SWL, [x, np.array([0.0, 1.0, 2.0])])
    forward(layer, bottom, top)
    assert np.isnan(top[0].data)
    assert np.isnan(layer.prob.data[1]).all() and np.isfinite(layer.prob.data[[0, 2]]).all()


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="already running without the JIT")
def test_same_tests_pass_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "tests/layers/test_softmax.py"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout

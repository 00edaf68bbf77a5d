"""Eltwise, Reduction, ArgMax, Filter, BatchReindex, Parameter, Silence, Embed: values vs
float64 NumPy, hand-computed cases, gradients, index inputs that refuse a gradient, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.net import Net
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, blob_from, forward, make_layer, random_blob, setup_layer

GRADIENT_CHECKED = {"Eltwise", "Reduction", "Filter", "BatchReindex", "Parameter", "Silence", "Embed"}


def spaced(shape, seed=0, gap=0.1):
    """Distinct values at least ``gap`` apart (argmax-like layers stay put under a 1e-2 step)."""
    n = int(np.prod(shape))
    values = (np.random.default_rng(seed).permutation(n) - n / 2) * gap
    return values.reshape(shape).astype(np.float32)


# --- Eltwise ---------------------------------------------------------------------------
ELT = 'name: "elt" type: "Eltwise" '


@pytest.mark.parametrize(
    "param,reference",
    [
        ("", lambda a, b, c: a + b + c),
        ("eltwise_param { operation: SUM coeff: 1 coeff: -2 coeff: 0.5 }", lambda a, b, c: a - 2 * b + 0.5 * c),
        ("eltwise_param { operation: PROD }", lambda a, b, c: a * b * c),
        ("eltwise_param { operation: MAX }", lambda a, b, c: np.maximum(np.maximum(a, b), c)),
    ],
)
def test_eltwise_forward(param, reference):
    layer, bottom, top = setup_layer(ELT + param, [(2, 3, 4)] * 3)
    assert top[0].shape == (2, 3, 4)
    forward(layer, bottom, top)
    a, b, c = (x.data.astype(np.float64) for x in bottom)
    np.testing.assert_allclose(top[0].data, reference(a, b, c), rtol=1e-6, atol=1e-7)


def test_eltwise_max_ties_by_hand():
    # A tie between bottoms 0 and 1 goes to 1; a later bottom must be strictly larger.
    b0, b1, b2 = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0]), np.array([1.0, 2.0, 4.0])
    layer, bottom, top = setup_layer(ELT + "eltwise_param { operation: MAX }", [b0, b1, b2])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [1, 2, 4])
    backward(layer, bottom, top, [np.ones(3)])
    np.testing.assert_array_equal(bottom[0].diff, [0, 1, 0])
    np.testing.assert_array_equal(bottom[1].diff, [1, 0, 1])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 0])


@pytest.mark.parametrize(
    "param",
    [
        "",
        "eltwise_param { coeff: 0.5 coeff: -1.5 coeff: 2 }",
        "eltwise_param { operation: PROD }",
        "eltwise_param { operation: PROD stable_prod_grad: false }",
        "eltwise_param { operation: MAX }",
    ],
)
def test_eltwise_gradient(param):
    # offsets 1/30 apart: no two bottoms come within the checker's step of each other
    bottoms = [spaced((2, 3, 2), seed=i) + i / 30 + (3.0 if "PROD" in param else 0.0) for i in range(3)]
    layer, bottom, top = setup_layer(ELT + param, bottoms)
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize("op", ["SUM", "PROD", "MAX"])
def test_eltwise_in_place_on_bottom_0_matches(op):
    text = ELT + f"eltwise_param {{ operation: {op} stable_prod_grad: {'false' if op == 'PROD' else 'true'} }}"
    data = [spaced((3, 4), seed=i) + 2 for i in range(3)]
    dy = np.random.default_rng(5).uniform(-1, 1, size=(3, 4)).astype(np.float32)
    layer, bottom, top = setup_layer(text, data)
    forward(layer, bottom, top)
    backward(layer, bottom, top, [dy])
    expected = top[0].data.copy(), [b.diff.copy() for b in bottom]
    shared = [blob_from(d) for d in data]
    layer = make_layer(text)
    layer.set_up(shared, [shared[0]])
    forward(layer, shared, [shared[0]])
    np.testing.assert_array_equal(shared[0].data, expected[0])
    backward(layer, shared, [shared[0]], [dy])
    for b, d in zip(shared, expected[1]):
        np.testing.assert_allclose(b.diff, d, rtol=1e-6)


def test_eltwise_errors():
    with pytest.raises(NetConfigError, match="'elt'.*2 eltwise_param.coeff values for 3 bottoms"):
        setup_layer(ELT + "eltwise_param { coeff: 1 coeff: 2 }", [(2,)] * 3)
    with pytest.raises(NetConfigError, match="'elt'.*coeff applies to SUM only"):
        setup_layer(ELT + "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", [(2,)] * 2)
    with pytest.raises(ShapeError, match=r"'elt'.*bottom\[1\] 'b' has shape \(2, 4\).*bottom\[0\] 'a' has \(2, 3\)"):
        setup_layer(ELT + 'bottom: "a" bottom: "b"', [(2, 3), (2, 4)])
    with pytest.raises(NetConfigError, match="'elt'.*at least 2 bottom"):
        setup_layer(ELT, [(2, 3)])
    x, y = random_blob((2,)), random_blob((2,))
    with pytest.raises(NetConfigError, match=r"'elt'.*top is bottom\[1\]"):
        make_layer(ELT).set_up([x, y], [y])


# --- Reduction -------------------------------------------------------------------------
RED = 'name: "red" type: "Reduction" '
REDUCE = {
    "SUM": lambda x: x.sum(-1),
    "ASUM": lambda x: np.abs(x).sum(-1),
    "SUMSQ": lambda x: (x**2).sum(-1),
    "MEAN": lambda x: x.mean(-1),
}


@pytest.mark.parametrize("op", list(REDUCE))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 2.5), (-1, -0.5)])
def test_reduction_forward(op, axis, coeff):
    shape = (2, 3, 4)
    layer, bottom, top = setup_layer(RED + f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}", [shape])
    a = axis % 3
    assert top[0].shape == shape[:a]
    forward(layer, bottom, top)
    x = bottom[0].data.astype(np.float64).reshape(int(np.prod(shape[:a])), -1)
    np.testing.assert_allclose(top[0].data.reshape(-1), coeff * REDUCE[op](x), rtol=1e-5, atol=1e-6)


def test_reduction_default_is_the_sum_of_everything():
    layer, bottom, top = setup_layer('type: "Reduction"', [np.array([[1.0, -2.0], [3.0, 4.5]])])
    forward(layer, bottom, top)
    assert top[0].shape == () and float(top[0].data) == 6.5


@pytest.mark.parametrize("op", list(REDUCE))
def test_reduction_gradient(op):
    layer, bottom, top = setup_layer(RED + f"reduction_param {{ operation: {op} axis: 1 coeff: 1.5 }}", [spaced((2, 3, 2))])
    check_gradient(layer, bottom, top, setup=False, kink=0.0, kink_range=0.02 if op == "ASUM" else -1)


def test_reduction_errors():
    with pytest.raises(ShapeError, match=r"'red'.*axis 3 is out of range.*\(2, 3\)"):
        setup_layer(RED + "reduction_param { axis: 3 }", [(2, 3)])


# --- ArgMax ----------------------------------------------------------------------------
def test_argmax_without_axis():
    x = spaced((3, 2, 5), seed=1)
    layer, bottom, top = setup_layer('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [x])
    assert top[0].shape == (3, 2, 2)
    forward(layer, bottom, top)
    flat = x.reshape(3, -1)
    order = np.argsort(-flat, axis=1)[:, :2]
    np.testing.assert_array_equal(top[0].data[:, 0], order)
    np.testing.assert_array_equal(top[0].data[:, 1], np.take_along_axis(flat, order, 1))
    layer, bottom, top = setup_layer('type: "ArgMax"', [(4, 3, 2, 2)])
    assert top[0].shape == (4, 1, 1, 1)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data.ravel(), bottom[0].data.reshape(4, -1).argmax(1))
    layer, bottom, top = setup_layer('type: "ArgMax"', [(4, 6)])
    assert top[0].shape == (4, 1, 1)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_with_axis(axis, out_max_val):
    x = spaced((3, 4, 5), seed=2)
    text = f'type: "ArgMax" argmax_param {{ axis: {axis} top_k: 2 out_max_val: {str(out_max_val).lower()} }}'
    layer, bottom, top = setup_layer(text, [x])
    shape = list(x.shape)
    shape[axis] = 2
    assert top[0].shape == tuple(shape)
    forward(layer, bottom, top)
    order = np.take(np.argsort(-x, axis=axis), [0, 1], axis=axis)
    expected = np.take_along_axis(x, order, axis) if out_max_val else order
    np.testing.assert_array_equal(top[0].data, expected)


def test_argmax_ties_go_to_the_larger_index():
    layer, bottom, top = setup_layer('type: "ArgMax" argmax_param { top_k: 3 }', [np.array([[1.0, 3.0, 3.0, 0.0, 1.0]])])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data.ravel(), [2, 1, 4])


def test_argmax_has_no_gradient_and_checks_top_k():
    layer, bottom, top = setup_layer('name: "am" type: "ArgMax"', [(2, 3)])
    forward(layer, bottom, top)
    backward(layer, bottom, top, propagate_down=[False])
    with pytest.raises(NetConfigError, match="'am'.*no gradient"):
        backward(layer, bottom, top, propagate_down=[True])
    with pytest.raises(ShapeError, match=r"'am'.*top_k 4 exceeds the 3 values"):
        setup_layer('name: "am" type: "ArgMax" argmax_param { top_k: 4 axis: 1 }', [(2, 3)])
    with pytest.raises(ShapeError, match=r"'am'.*top_k 7 exceeds the 6 values"):
        setup_layer('name: "am" type: "ArgMax" argmax_param { top_k: 7 }', [(2, 3, 2)])
    with pytest.raises(NetConfigError, match="'am'.*top_k must be at least 1"):
        setup_layer('name: "am" type: "ArgMax" argmax_param { top_k: 0 }', [(2, 3)])
    with pytest.raises(ShapeError, match="'am'.*axis 2 is out of range"):
        setup_layer('name: "am" type: "ArgMax" argmax_param { axis: 2 }', [(2, 3)])


# --- Filter ----------------------------------------------------------------------------
FILTER = 'name: "filter" type: "Filter" '


def test_filter_forward_backward():
    selector = np.array([1.0, 0.0, 2.0, 0.0])
    layer, bottom, top = setup_layer(FILTER, [(4, 3), (4, 2, 2), selector], num_top=2)
    assert [t.shape for t in top] == [(4, 3), (4, 2, 2)]  # before any data: the whole batch
    forward(layer, bottom, top)
    assert [t.shape for t in top] == [(2, 3), (2, 2, 2)]
    for b, t in zip(bottom, top):
        np.testing.assert_array_equal(t.data, b.data[[0, 2]])
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(0)
    backward(layer, bottom, top)
    for b, t in zip(bottom, top):
        np.testing.assert_array_equal(b.diff[[0, 2]], t.diff)
        assert np.all(b.diff[[1, 3]] == 0)
    with pytest.raises(NetConfigError, match="'filter'.*selector"):
        backward(layer, bottom, top, propagate_down=[True, True, True])


def test_filter_gradient():
    layer, bottom, top = setup_layer(FILTER, [(4, 3), np.array([[0.0], [1.0], [1.0], [0.0]])])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_filter_errors():
    with pytest.raises(NetConfigError, match="'filter'.*3 bottoms need 2 tops.*got 1"):
        setup_layer(FILTER, [(4, 3), (4, 2), np.ones(4)])
    with pytest.raises(ShapeError, match=r"'filter'.*selector.*\(4, 2\).*\(N,\) or \(N, 1, \.\.\.\)"):
        setup_layer(FILTER, [(4, 3), np.ones((4, 2))])
    with pytest.raises(ShapeError, match=r"'filter'.*bottom\[0\] has shape \(3, 3\).*4 items"):
        setup_layer(FILTER, [(3, 3), np.ones(4)])


# --- BatchReindex ----------------------------------------------------------------------
REINDEX = 'name: "reindex" type: "BatchReindex" '


def test_batch_reindex_forward_and_accumulating_backward():
    index = np.array([2.0, 0.0, 2.0, 1.0, 2.0])
    layer, bottom, top = setup_layer(REINDEX, [(3, 2, 2), index])
    assert top[0].shape == (5, 2, 2)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data[[2, 0, 2, 1, 2]])
    backward(layer, bottom, top, propagate_down=[True, False])
    dy = top[0].diff.astype(np.float64)
    np.testing.assert_allclose(bottom[0].diff[2], dy[0] + dy[2] + dy[4], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(bottom[0].diff[0], dy[1])
    np.testing.assert_array_equal(bottom[0].diff[1], dy[3])


def test_batch_reindex_gradient():
    layer, bottom, top = setup_layer(REINDEX, [(3, 2), np.array([1.0, 1.0, 0.0])])
    check_gradient(layer, bottom, top, check_bottom=[0], setup=False)


def test_batch_reindex_errors():
    layer, bottom, top = setup_layer(REINDEX, [(3, 2), np.array([0.0, 3.0])])
    with pytest.raises(DataError, match=r"'reindex'.*index 3 is out of range.*\[0, 3\)"):
        forward(layer, bottom, top)
    layer, bottom, top = setup_layer(REINDEX, [(3, 2), np.array([0.0, 1.0])])
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match="'reindex'.*indices"):
        backward(layer, bottom, top, propagate_down=[True, True])
    with pytest.raises(ShapeError, match=r"'reindex'.*indices.*\(2, 1\).*1-d"):
        setup_layer(REINDEX, [(3, 2), np.zeros((2, 1))])


# --- Parameter -------------------------------------------------------------------------
def test_parameter_exposes_its_blob():
    layer, bottom, top = setup_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (2, 3) and top[0].shape == (2, 3)
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, np.arange(6).reshape(2, 3))
    assert np.shares_memory(top[0].diff, layer.blobs[0].diff)
    check_gradient(layer, bottom, top, setup=False)


def test_parameter_learns_in_a_net():
    net = Net(
        """
        layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }
        layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "t" top: "loss" }
        """,
        phase=0,
    )
    net.blobs["t"].data[...] = 1.0
    net.clear_param_diffs()
    net.forward_backward()
    np.testing.assert_allclose(net.params["p"][0].diff, -np.ones((2, 3)) / 2)  # (p - t) / N


def test_parameter_errors():
    with pytest.raises(NetConfigError, match=r"'p'.*\(2, -1\).*negative"):
        setup_layer('name: "p" type: "Parameter" parameter_param { shape { dim: 2 dim: -1 } }', [])


# --- Silence ---------------------------------------------------------------------------
def test_silence_zeroes_bottom_diffs():
    layer, bottom, top = setup_layer('type: "Silence"', [(2, 3), (4,)], num_top=0)
    forward(layer, bottom, top)
    for b in bottom:
        b.diff[...] = 5
    backward(layer, bottom, top, propagate_down=[True, False])
    assert np.all(bottom[0].diff == 0) and np.all(bottom[1].diff == 5)
    check_gradient(layer, bottom, top, setup=False)


def test_silence_consumes_outputs_in_a_net():
    text = 'layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 } } } '
    assert Net(text).outputs == ["a", "b"]
    assert Net(text + 'layer { name: "s" type: "Silence" bottom: "a" bottom: "b" }').outputs == []
    with pytest.raises(NetConfigError, match="'s'.*exactly 0 top"):
        setup_layer('name: "s" type: "Silence"', [(2,)], num_top=1)


# --- Embed -----------------------------------------------------------------------------
def embed(extra: str = "", num_output: int = 3, input_dim: int = 5) -> str:
    fillers = "weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'uniform' min: -1 max: 1 }"
    return (f'name: "embed" type: "Embed" embed_param {{ num_output: {num_output} input_dim: {input_dim} '
            f"{fillers} {extra} }}")


def test_embed_forward_and_scatter_add_backward():
    words = np.array([[4.0, 0.0, 4.0], [2.0, 4.0, 1.0]])
    layer, bottom, top = setup_layer(embed(), [words])
    W, b = layer.blobs[0], layer.blobs[1]
    assert W.shape == (5, 3) and b.shape == (3,) and top[0].shape == (2, 3, 3)
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, W.data[words.astype(int)] + b.data, rtol=1e-6)
    backward(layer, bottom, top, propagate_down=[False])
    dy = top[0].diff.reshape(6, 3).astype(np.float64)
    np.testing.assert_allclose(W.diff[4], dy[0] + dy[2] + dy[4], rtol=1e-6)
    np.testing.assert_array_equal(W.diff[3], 0)
    np.testing.assert_allclose(b.diff, dy.sum(0), rtol=1e-5)
    assert not layer.allow_force_backward(0)


@pytest.mark.parametrize("extra", ["", "bias_term: false"])
def test_embed_gradient(extra):
    layer, bottom, top = setup_layer(embed(extra), [np.array([1.0, 3.0, 1.0, 0.0])])
    assert len(layer.blobs) == (1 if extra else 2)
    check_gradient(layer, bottom, top, check_bottom=[], setup=False)


def test_embed_errors():
    with pytest.raises(NetConfigError, match="'embed'.*num_output"):
        setup_layer('name: "embed" type: "Embed" embed_param { input_dim: 3 }', [(2,)])
    with pytest.raises(NetConfigError, match="'embed'.*input_dim"):
        setup_layer('name: "embed" type: "Embed" embed_param { num_output: 3 }', [(2,)])
    layer, bottom, top = setup_layer(embed(), [np.array([1.0, 5.0])])
    with pytest.raises(DataError, match=r"'embed'.*index 5 is out of range.*\[0, 5\)"):
        forward(layer, bottom, top)
    layer, bottom, top = setup_layer(embed(), [np.array([1.5])])
    with pytest.raises(DataError, match="'embed'.*whole numbers"):
        forward(layer, bottom, top)
    layer, bottom, top = setup_layer(embed(), [np.array([1.0])])
    forward(layer, bottom, top)
    with pytest.raises(NetConfigError, match="'embed'.*indices"):
        backward(layer, bottom, top, propagate_down=[True])


def test_layers_with_index_inputs_in_a_net_with_force_backward():
    # force_backward must not ask the index inputs for a gradient
    net = Net(
        """
        force_backward: true
        layer { name: "in" type: "Input" top: "x" top: "i" top: "w"
                input_param { shape { dim: 3 dim: 2 } shape { dim: 2 } shape { dim: 2 } } }
        layer { name: "reindex" type: "BatchReindex" bottom: "x" bottom: "i" top: "y" }
        layer { name: "embed" type: "Embed" bottom: "w" top: "e" embed_param { num_output: 2 input_dim: 3 } }
        layer { name: "sum" type: "Eltwise" bottom: "y" bottom: "e" top: "z" }
        layer { name: "red" type: "Reduction" bottom: "z" top: "loss" loss_weight: 1 }
        """
    )
    net.forward_backward()  # the indices are zeros: both rows of y read x[0]
    np.testing.assert_array_equal(net.blobs["x"].diff, [[2, 2], [0, 0], [0, 0]])

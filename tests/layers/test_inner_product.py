"""InnerProduct: shapes, forward vs float64, gradients, transpose, axis, errors."""

import numpy as np
import pytest

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, make_layer, random_blob, setup_layer

GRADIENT_CHECKED = {"InnerProduct"}

FILLERS = "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'uniform' min: -1 max: 1 }"


def ip(extra: str = "", num_output: int = 4) -> str:
    param = f"num_output: {num_output} {FILLERS} {extra}"
    return f'name: "ip1" type: "InnerProduct" inner_product_param {{ {param} }}'


def reference(x, W, b, axis, transpose):
    M = int(np.prod(x.shape[:axis]))
    x2 = x.reshape(M, -1).astype(np.float64)
    W = W.astype(np.float64)
    y = x2 @ (W if transpose else W.T)
    if b is not None:
        y = y + b
    return y.reshape(x.shape[:axis] + (y.shape[1],))


@pytest.mark.parametrize(
    "extra,shape,axis",
    [
        ("", (2, 3, 4, 5), 1),
        ("transpose: true", (2, 3, 4, 5), 1),
        ("bias_term: false", (3, 7), 1),
        ("axis: 2", (2, 3, 4, 5), 2),
        ("axis: -1", (2, 3, 5), 2),
        ("axis: 0", (3, 2), 0),
    ],
)
def test_forward_and_shapes(extra, shape, axis):
    layer, bottom, top = setup_layer(ip(extra), [shape])
    K = int(np.prod(shape[axis:]))
    transpose = "transpose" in extra
    assert layer.blobs[0].shape == ((K, 4) if transpose else (4, K))
    assert len(layer.blobs) == (1 if "bias_term: false" in extra else 2)
    assert top[0].shape == shape[:axis] + (4,)
    forward(layer, bottom, top)
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = reference(bottom[0].data, layer.blobs[0].data, b, axis, transpose)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "extra,shape", [("", (2, 3, 2, 2)), ("transpose: true", (3, 5)), ("bias_term: false axis: 2", (2, 2, 3))]
)
def test_gradient(extra, shape):
    layer, bottom, top = setup_layer(ip(extra, num_output=3), [shape])
    check_gradient(layer, bottom, top, setup=False)


def test_param_diffs_accumulate_and_bottom_diff_is_assigned():
    layer, bottom, top = setup_layer(ip(), [(2, 6)])
    forward(layer, bottom, top)
    backward(layer, bottom, top)
    first_w, first_b, first_x = (
        layer.blobs[0].diff.copy(),
        layer.blobs[1].diff.copy(),
        bottom[0].diff.copy(),
    )
    layer.run_backward(top, [True], bottom)  # same top diff again, without clearing
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * first_w, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * first_b, rtol=1e-6)
    np.testing.assert_array_equal(bottom[0].diff, first_x)


def test_propagate_down_flags():
    layer, bottom, top = setup_layer(ip(), [(2, 6)])
    forward(layer, bottom, top)
    bottom[0].diff[...] = 7
    layer.param_propagate_down = [False, True]
    backward(layer, bottom, top, propagate_down=[False])
    assert np.all(bottom[0].diff == 7)
    assert np.all(layer.blobs[0].diff == 0)
    assert np.any(layer.blobs[1].diff != 0)


def test_fillers_default_to_zero_and_xavier_scale():
    layer, _, _ = setup_layer('type: "InnerProduct" inner_product_param { num_output: 3 }', [(2, 5)])
    assert np.all(layer.blobs[0].data == 0) and np.all(layer.blobs[1].data == 0)
    layer, _, _ = setup_layer(
        "type: 'InnerProduct' inner_product_param { num_output: 50 weight_filler { type: 'xavier' } }",
        [(2, 300)],
    )
    limit = np.sqrt(3.0 / 300)  # fan_in = K
    assert np.abs(layer.blobs[0].data).max() <= limit
    assert np.abs(layer.blobs[0].data).max() > 0.9 * limit


def test_loaded_blobs_are_kept():
    layer = make_layer(ip())
    layer.blobs = [Blob((4, 6)), Blob((4,))]
    layer.blobs[0].data[...] = 1.5
    layer.set_up([random_blob((2, 6))], [Blob()])
    assert np.all(layer.blobs[0].data == 1.5)


def test_input_size_change_is_a_shape_error():
    layer, bottom, top = setup_layer(ip(), [(2, 3, 4)])
    bottom[0].reshape(2, 3, 5)
    with pytest.raises(ShapeError) as err:
        forward(layer, bottom, top)
    message = str(err.value)
    assert "ip1" in message and "(2, 3, 5)" in message and "(4, 12)" in message


def test_batch_size_may_change():
    layer, bottom, top = setup_layer(ip(), [(2, 6)])
    bottom[0].reshape(5, 6)
    forward(layer, bottom, top)
    assert top[0].shape == (5, 4)


def test_num_output_required():
    with pytest.raises(NetConfigError, match="ip1.*num_output"):
        setup_layer('name: "ip1" type: "InnerProduct"', [(2, 3)])


def test_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"ip1.*axis 3.*\(2, 3\)"):
        setup_layer(ip("axis: 3"), [(2, 3)])


@pytest.mark.parametrize("extra", ["", "transpose: true", "bias_term: false"])
def test_forward_split_in_two_halves_of_the_rows(monkeypatch, extra):
    from pycaffe_lite.layers import inner_product

    monkeypatch.setattr(inner_product, "SPLIT_MACS", (1, 1 << 40))
    monkeypatch.setattr(inner_product.InnerProductLayer, "_split_forward", lambda self: self._cut > 0)
    layer, bottom, top = setup_layer(ip(extra, num_output=24), [(50, 3, 4, 4)])
    assert layer._cut == 32  # 16-row aligned, near the middle
    for _ in range(3):  # the product chooser runs it split or whole; both give the product
        forward(layer, bottom, top)
        b = layer.blobs[1].data if len(layer.blobs) > 1 else None
        expected = reference(bottom[0].data, layer.blobs[0].data, b, 1, "transpose" in extra)
        np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-5)


def test_small_or_large_products_are_not_split():
    layer, _, _ = setup_layer(ip(num_output=3), [(40, 5)])
    assert layer._cut == 0  # 600 multiply-adds: whole
    layer, _, _ = setup_layer(ip(num_output=64), [(100, 64, 4, 4)])
    assert layer._cut == 48  # CIFAR-10 quick's ip1

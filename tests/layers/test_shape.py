"""Flatten, Split, Reshape, Concat, Slice, Tile: shapes, values, shared storage, gradients, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, make_layer, random_blob, setup_layer

GRADIENT_CHECKED = {"Flatten", "Split", "Reshape", "Concat", "Slice", "Tile"}


# --- Flatten ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra,expected",
    [
        ("", (2, 60)),
        ("flatten_param { axis: 2 }", (2, 3, 20)),
        ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
        ("flatten_param { axis: -2 end_axis: -1 }", (2, 3, 20)),
        ("flatten_param { axis: 0 }", (120,)),
        ("flatten_param { axis: 3 end_axis: 3 }", (2, 3, 4, 5)),
    ],
)
def test_flatten_shapes_and_values(extra, expected):
    layer, bottom, top = setup_layer('type: "Flatten" ' + extra, [(2, 3, 4, 5)])
    assert top[0].shape == expected
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(expected))


def test_flatten_shares_data_and_diff():
    layer, bottom, top = setup_layer('type: "Flatten"', [(2, 3, 4)])
    forward(layer, bottom, top)
    assert np.shares_memory(top[0].data, bottom[0].data)
    bottom[0].data[0, 0, 0] = 9.0
    assert top[0].data[0, 0] == 9.0
    backward(layer, bottom, top)
    np.testing.assert_array_equal(bottom[0].diff.reshape(2, 12), top[0].diff)


def test_flatten_follows_a_new_batch_size():
    layer, bottom, top = setup_layer('type: "Flatten"', [(2, 3, 4)])
    bottom[0].reshape(7, 3, 4)
    bottom[0].data[...] = 1.5
    forward(layer, bottom, top)
    assert top[0].shape == (7, 12) and np.all(top[0].data == 1.5)


def test_flatten_gradient():
    layer, bottom, top = setup_layer('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [(2, 3, 2, 2)])
    check_gradient(layer, bottom, top, setup=False)


def test_flatten_errors():
    with pytest.raises(ShapeError, match=r"'fl'.*axis 4.*\(2, 3\)"):
        setup_layer('name: "fl" type: "Flatten" flatten_param { axis: 4 }', [(2, 3)])
    with pytest.raises(NetConfigError, match="'fl'.*end_axis"):
        setup_layer('name: "fl" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }', [(2, 3, 4)])
    x = random_blob((2, 3))
    with pytest.raises(NetConfigError, match="in place"):
        make_layer('name: "fl" type: "Flatten"').set_up([x], [x])


# --- Split -----------------------------------------------------------------------------
def test_split_shares_data():
    layer, bottom, top = setup_layer('type: "Split"', [(2, 3, 4)], num_top=3)
    for t in top:
        assert t.shape == (2, 3, 4)
    forward(layer, bottom, top)
    for t in top:
        np.testing.assert_array_equal(t.data, bottom[0].data)
        assert np.shares_memory(t.data, bottom[0].data)


@pytest.mark.parametrize("num_top", [1, 2, 3])
def test_split_backward_sums(num_top):
    layer, bottom, top = setup_layer('type: "Split"', [(2, 5)], num_top=num_top)
    forward(layer, bottom, top)
    backward(layer, bottom, top)
    expected = sum(t.diff.astype(np.float64) for t in top)
    np.testing.assert_allclose(bottom[0].diff, expected, rtol=1e-6)


def test_split_gradient():
    layer, bottom, top = setup_layer('type: "Split"', [(2, 3, 2)], num_top=2)
    check_gradient(layer, bottom, top, setup=False)


def test_split_not_in_place():
    x = random_blob((2, 3))
    with pytest.raises(NetConfigError, match="in place"):
        make_layer('name: "sp" type: "Split"').set_up([x], [x])


# --- Reshape ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param,shape,expected",
    [
        ("shape { dim: 0 dim: -1 }", (2, 3, 4), (2, 12)),
        ("shape { dim: 6 dim: 4 }", (2, 3, 4), (6, 4)),
        ("shape { dim: -1 }", (2, 3, 4), (24,)),
        ("shape { dim: 0 dim: 0 dim: 2 dim: 2 }", (2, 3, 4), (2, 3, 2, 2)),
        ("axis: 1 num_axes: 1 shape { dim: 3 dim: 1 }", (2, 3, 4), (2, 3, 1, 4)),
        ("axis: 1 num_axes: 0 shape { dim: 1 }", (2, 3, 4), (2, 1, 3, 4)),
        ("axis: -1 num_axes: 0 shape { dim: 1 }", (2, 3, 4), (2, 3, 4, 1)),
        ("axis: 0 num_axes: 2 shape { dim: -1 }", (2, 3, 4), (6, 4)),
        ("axis: 2 shape { dim: 2 dim: -1 }", (2, 3, 4), (2, 3, 2, 2)),
        ("shape { dim: 0 dim: 3 dim: 2 dim: -1 }", (2, 3, 8), (2, 3, 2, 4)),
        ("shape { }", (1, 1), ()),
    ],
)
def test_reshape_shapes(param, shape, expected):
    layer, bottom, top = setup_layer(f'type: "Reshape" reshape_param {{ {param} }}', [shape])
    assert top[0].shape == expected
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data.ravel(), bottom[0].data.ravel())
    assert np.shares_memory(top[0].data, bottom[0].data)


def test_reshape_shares_diff_and_follows_the_batch():
    layer, bottom, top = setup_layer('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 } }', [(2, 3, 4)])
    backward(layer, bottom, top)
    np.testing.assert_array_equal(bottom[0].diff.reshape(2, 12), top[0].diff)
    bottom[0].reshape(5, 3, 4)
    forward(layer, bottom, top)
    assert top[0].shape == (5, 12)


def test_reshape_gradient():
    layer, bottom, top = setup_layer('type: "Reshape" reshape_param { shape { dim: 3 dim: -1 } }', [(2, 3, 2)])
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize(
    "param,shape,error,message",
    [
        ("shape { dim: -1 dim: -1 }", (2, 3), NetConfigError, r"'rs'.*2 dimensions of -1"),
        ("shape { dim: -2 }", (2, 3), NetConfigError, r"'rs'.*below -1"),
        ("shape { dim: 5 dim: -1 }", (2, 3), ShapeError, r"'rs'.*cannot infer.*\(2, 3\) has 6.*5"),
        ("shape { dim: 4 dim: 2 }", (2, 3), ShapeError, r"'rs'.*\(4, 2\) with 8 values.*\(2, 3\) has 6"),
        ("shape { dim: 0 dim: 0 dim: 0 }", (2, 3), ShapeError, r"'rs'.*0 at position 2.*no axis 2"),
        ("axis: 4 shape { dim: 1 }", (2, 3), ShapeError, r"'rs'.*axis 4 is out of range"),
        ("axis: 1 num_axes: 3 shape { dim: 1 }", (2, 3), ShapeError, r"'rs'.*num_axes 3 goes past"),
        ("num_axes: -2 shape { dim: 1 }", (2, 3), NetConfigError, r"'rs'.*num_axes -2"),
    ],
)
def test_reshape_errors(param, shape, error, message):
    with pytest.raises(error, match=message):
        setup_layer(f'name: "rs" type: "Reshape" reshape_param {{ {param} }}', [shape])


def test_reshape_not_in_place():
    x = random_blob((2, 3))
    with pytest.raises(NetConfigError, match="'rs'.*in place"):
        make_layer('name: "rs" type: "Reshape" reshape_param { shape { dim: -1 } }').set_up([x], [x])


# --- Concat ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param,shapes,axis",
    [
        ("", [(2, 3, 4), (2, 1, 4), (2, 2, 4)], 1),
        ("concat_param { axis: 0 }", [(1, 3), (4, 3)], 0),
        ("concat_param { axis: -1 }", [(2, 3, 1), (2, 3, 5)], 2),
        ("concat_param { concat_dim: 0 }", [(2, 2, 2), (3, 2, 2)], 0),
    ],
)
def test_concat_forward_and_backward(param, shapes, axis):
    layer, bottom, top = setup_layer(f'type: "Concat" {param}', shapes)
    expected = np.concatenate([b.data for b in bottom], axis=axis)
    assert top[0].shape == expected.shape
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, expected)
    backward(layer, bottom, top)
    pieces = np.split(top[0].diff, np.cumsum([s[axis] for s in shapes])[:-1], axis=axis)
    for b, piece in zip(bottom, pieces):
        np.testing.assert_array_equal(b.diff, piece)


def test_concat_gradient_and_propagate_down():
    layer, bottom, top = setup_layer('type: "Concat"', [(2, 1, 3), (2, 2, 3)])
    check_gradient(layer, bottom, top, setup=False)
    bottom[0].diff[...] = 7
    backward(layer, bottom, top, propagate_down=[False, True])
    assert np.all(bottom[0].diff == 7)


def test_concat_one_bottom_shares_storage():
    layer, bottom, top = setup_layer('type: "Concat"', [(2, 3)])
    forward(layer, bottom, top)
    assert np.shares_memory(top[0].data, bottom[0].data) and np.shares_memory(top[0].diff, bottom[0].diff)
    check_gradient(layer, bottom, top, setup=False)


def test_concat_errors():
    with pytest.raises(ShapeError, match=r"'cat'.*bottom\[1\] 'b'.*\(2, 4, 5\).*bottom\[0\] 'a'.*\(2, 3, 4\).*axis 1"):
        setup_layer('name: "cat" type: "Concat" bottom: "a" bottom: "b"', [(2, 3, 4), (2, 4, 5)])
    with pytest.raises(ShapeError, match=r"'cat'.*bottom\[1\] has shape \(2, 3, 1\).*bottom\[0\] has \(2, 3\)"):
        setup_layer('name: "cat" type: "Concat"', [(2, 3), (2, 3, 1)])
    with pytest.raises(NetConfigError, match="'cat'.*both axis and concat_dim"):
        setup_layer('name: "cat" type: "Concat" concat_param { axis: 1 concat_dim: 1 }', [(2, 3), (2, 3)])
    with pytest.raises(ShapeError, match="'cat'.*concat_dim 2 is out of range"):
        setup_layer('name: "cat" type: "Concat" concat_param { concat_dim: 2 }', [(2, 3), (2, 3)])
    with pytest.raises(ShapeError, match="'cat'.*axis -3 is out of range"):
        setup_layer('name: "cat" type: "Concat" concat_param { axis: -3 }', [(2, 3), (2, 3)])


# --- Slice -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param,shape,num_top,axis,points",
    [
        ("slice_param { slice_point: 1 slice_point: 4 }", (2, 6, 3), 3, 1, [1, 4]),
        ("", (2, 6, 3), 3, 1, [2, 4]),
        ("slice_param { axis: 0 }", (4, 3), 2, 0, [2]),
        ("slice_param { axis: -1 slice_point: 2 }", (2, 3, 5), 2, 2, [2]),
        ("slice_param { slice_dim: 1 slice_point: 1 }", (3, 2, 2, 2), 2, 1, [1]),  # the siamese example
    ],
)
def test_slice_forward_and_backward(param, shape, num_top, axis, points):
    layer, bottom, top = setup_layer(f'type: "Slice" {param}', [shape], num_top=num_top)
    expected = np.split(bottom[0].data, points, axis=axis)
    assert [t.shape for t in top] == [e.shape for e in expected]
    forward(layer, bottom, top)
    for t, e in zip(top, expected):
        np.testing.assert_array_equal(t.data, e)
    backward(layer, bottom, top)
    np.testing.assert_array_equal(bottom[0].diff, np.concatenate([t.diff for t in top], axis=axis))


def test_slice_gradient():
    layer, bottom, top = setup_layer('type: "Slice" slice_param { slice_point: 1 }', [(2, 3, 2)], num_top=2)
    check_gradient(layer, bottom, top, setup=False)
    layer, bottom, top = setup_layer('type: "Slice"', [(2, 3)], num_top=1)
    assert np.shares_memory(top[0].diff, bottom[0].diff)
    check_gradient(layer, bottom, top, setup=False)


@pytest.mark.parametrize(
    "param,shape,num_top,error,message",
    [
        ("", (2, 5), 2, ShapeError, r"'sl'.*2 tops cannot split axis 1.*\(2, 5\) \(5\)"),
        ("slice_param { slice_point: 1 }", (2, 5), 3, NetConfigError, r"'sl'.*1 slice_point values for 3 tops"),
        ("slice_param { slice_point: 3 slice_point: 2 }", (2, 5), 3, ShapeError, r"'sl'.*\[3, 2\].*increase"),
        ("slice_param { slice_point: 5 }", (2, 5), 2, ShapeError, r"'sl'.*inside \(0, 5\)"),
        ("slice_param { axis: 1 slice_dim: 1 }", (2, 4), 2, NetConfigError, r"'sl'.*both axis and slice_dim"),
        ("slice_param { slice_dim: 3 }", (2, 4), 2, ShapeError, r"'sl'.*slice_dim 3 is out of range"),
    ],
)
def test_slice_errors(param, shape, num_top, error, message):
    with pytest.raises(error, match=message):
        setup_layer(f'name: "sl" type: "Slice" {param}', [shape], num_top=num_top)


# --- Tile ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "param,shape,axis,tiles",
    [
        ("tile_param { tiles: 3 }", (2, 3, 2), 1, 3),
        ("tile_param { axis: 0 tiles: 2 }", (2, 3), 0, 2),
        ("tile_param { axis: -1 tiles: 4 }", (2, 3), 1, 4),
        ("tile_param { tiles: 1 }", (2, 3), 1, 1),
    ],
)
def test_tile_forward_and_backward(param, shape, axis, tiles):
    layer, bottom, top = setup_layer(f'type: "Tile" {param}', [shape])
    x = bottom[0].data
    # Caffe repeats the whole block from the axis on, i.e. numpy's tile over that axis.
    reps = [1] * x.ndim
    reps[axis] = tiles
    expected = np.tile(x, reps)
    assert top[0].shape == expected.shape
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, expected)
    backward(layer, bottom, top)
    dy = top[0].diff.astype(np.float64)
    split = np.split(dy, tiles, axis=axis)
    np.testing.assert_allclose(bottom[0].diff, sum(split), rtol=1e-6)


def test_tile_by_hand_and_gradient():
    layer, bottom, top = setup_layer('type: "Tile" tile_param { tiles: 2 }', [np.array([[1.0, 2.0], [3.0, 4.0]])])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [[1, 2, 1, 2], [3, 4, 3, 4]])
    layer, bottom, top = setup_layer('type: "Tile" tile_param { axis: 1 tiles: 3 }', [(2, 2, 2)])
    check_gradient(layer, bottom, top, setup=False)


def test_tile_errors():
    with pytest.raises(NetConfigError, match="'tl'.*tiles must be given"):
        setup_layer('name: "tl" type: "Tile"', [(2, 3)])
    with pytest.raises(NetConfigError, match="'tl'.*tiles is 0.*positive"):
        setup_layer('name: "tl" type: "Tile" tile_param { tiles: 0 }', [(2, 3)])
    with pytest.raises(ShapeError, match=r"'tl'.*axis 2 is out of range.*\(2, 3\)"):
        setup_layer('name: "tl" type: "Tile" tile_param { axis: 2 tiles: 2 }', [(2, 3)])

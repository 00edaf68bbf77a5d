"""Pooling: Caffe's rounding, forward against a float64 reference, gradients, errors."""
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.layers.pooling import PoolingLayer
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.rng import set_random_seed
from pycaffe_lite.testing import check_gradient

GRADIENT_CHECKED = {"Pooling"}


def make(text: str) -> PoolingLayer:
    lp = text_format.Parse('name: "pool" type: "Pooling" pooling_param { ' + text + " }", caffe_pb2.LayerParameter())
    return PoolingLayer(lp)


def blob(shape, seed=0):
    b = Blob(shape, name="x")
    # distinct values so the max is unique and the gradient check never sits on a tie
    b.data[...] = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1
    return b


def reference(x, k, s, p, mode):
    N, C, H, W = x.shape
    OH = -((k - H - 2 * p) // s) + 1
    OW = -((k - W - 2 * p) // s) + 1
    if p and (OH - 1) * s >= H + p:
        OH -= 1
    if p and (OW - 1) * s >= W + p:
        OW -= 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * s - p, j * s - p
            h1, w1 = min(h0 + k, H + p), min(w0 + k, W + p)
            size = (h1 - h0) * (w1 - w0)
            win = x[:, :, max(h0, 0):min(h1, H), max(w0, 0):min(w1, W)]
            y[:, :, i, j] = win.max(axis=(2, 3)) if mode == "MAX" else win.sum(axis=(2, 3)) / size
    return y


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,k,s,p", [((2, 3, 6, 6), 2, 2, 0), ((1, 2, 7, 5), 3, 2, 1), ((1, 1, 1, 1), 1, 1, 0),
                                         ((2, 1, 5, 5), 3, 3, 1)])
def test_forward_matches_reference(mode, shape, k, s, p):
    layer = make(f"pool: {mode} kernel_size: {k} stride: {s} pad: {p}")
    x, top = blob(shape), Blob()
    layer.set_up([x], [top])
    layer.run_forward([x], [top])
    ref = reference(x.data.astype(np.float64), k, s, p, mode)
    assert top.shape == ref.shape
    np.testing.assert_allclose(top.data, ref, rtol=1e-5, atol=1e-5)


def test_caffe_rounding_keeps_partial_window():
    # 28 -> conv 24 -> pool 12 in LeNet; 7 with k 2 s 2 gives ceil(5/2)+1 = 4 windows
    layer = make("pool: MAX kernel_size: 2 stride: 2")
    x, top = blob((1, 1, 7, 7)), Blob()
    layer.set_up([x], [top])
    assert top.shape == (1, 1, 4, 4)


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_gradient(mode):
    layer = make(f"pool: {mode} kernel_size: 3 stride: 2 pad: 1")
    x, top = blob((2, 2, 5, 4), 1), Blob()
    assert check_gradient(layer, [x], [top]) > 0


def test_global_pooling_and_mask_top():
    layer = make("pool: MAX global_pooling: true")
    x, top, mask = blob((2, 3, 4, 5)), Blob(), Blob()
    layer.set_up([x], [top, mask])
    layer.run_forward([x], [top, mask])
    assert top.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top.data[:, :, 0, 0], x.data.max(axis=(2, 3)))
    np.testing.assert_array_equal(mask.data[:, :, 0, 0], x.data.reshape(2, 3, -1).argmax(axis=2))


@pytest.mark.parametrize("H, dtype", [(4, np.int16), (256, np.int32)])
def test_mask_dtype_holds_every_index(H, dtype):
    # int16 masks for planes of up to 32767 pixels, int32 beyond (256 x 256 = 65536): the argmax
    # at the plane's last pixel must survive the store and route the gradient back
    layer = make("pool: MAX global_pooling: true")
    x, top, mask = Blob((1, 1, H, H), name="x"), Blob(), Blob()
    x.data[...] = 0
    x.data[0, 0, -1, -1] = 1
    layer.set_up([x], [top, mask])
    layer.run_forward([x], [top, mask])
    assert layer.mask.dtype == dtype
    assert mask.data[0, 0, 0, 0] == H * H - 1
    top.diff[...] = 2
    layer.backward([top], [True], [x])
    assert x.diff[0, 0, -1, -1] == 2 and x.diff.sum() == 2


@pytest.mark.parametrize("pool", ["MAX", "STOCHASTIC"])
@pytest.mark.parametrize("k,s", [(2, 2), (3, 2)], ids=["disjoint", "overlapping"])
def test_small_bottoms_take_the_serial_backward_with_the_same_result(pool, k, s, monkeypatch):
    from pycaffe_lite.kernels.pooling import max_pool_backward, max_pool_backward_serial
    from pycaffe_lite.layers import pooling

    results = []
    for limit, kernel in ((1 << 30, max_pool_backward_serial), (0, max_pool_backward)):
        monkeypatch.setattr(pooling, "SERIAL_BACKWARD_MAX", limit)
        set_random_seed(5)
        layer = make_phase(f"pool: {pool} kernel_size: {k} stride: {s}", "TRAIN")
        x, top = blob((2, 3, 9, 7)), Blob()
        layer.set_up([x], [top])
        layer.run_forward([x], [top])
        assert layer._max_backward is kernel
        top.diff[...] = np.random.default_rng(1).standard_normal(top.shape)
        x.diff[...] = np.nan  # assigned, not accumulated
        layer.run_backward([top], [True], [x])
        results.append(x.diff.copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert np.isfinite(results[0]).all() and np.count_nonzero(results[0]) > 0


def test_errors():
    with pytest.raises(NetConfigError, match="kernel_size .* is required"):
        make("pool: MAX").set_up([blob((1, 1, 4, 4))], [Blob()])
    with pytest.raises(NetConfigError, match="pad 2x2 must be smaller"):
        make("pool: MAX kernel_size: 2 pad: 2").set_up([blob((1, 1, 4, 4))], [Blob()])


# --- STOCHASTIC ---------------------------------------------------------------------------
def positive(shape, seed=0):
    b = Blob(shape, name="x")
    b.data[...] = np.random.default_rng(seed).uniform(0.1, 1.0, size=shape)
    return b


def make_phase(text: str, phase: str) -> PoolingLayer:
    lp = text_format.Parse(f'name: "pool" type: "Pooling" phase: {phase} pooling_param {{ {text} }}',
                           caffe_pb2.LayerParameter())
    return PoolingLayer(lp)


def test_stochastic_train_samples_in_proportion_to_the_values():
    set_random_seed(5)
    layer = make_phase("pool: STOCHASTIC kernel_h: 1 kernel_w: 2 stride_h: 1 stride_w: 2", "TRAIN")
    x, top = Blob((1000, 4, 1, 2)), Blob()
    x.data[...] = [1.0, 3.0]
    layer.set_up([x], [top])
    layer.run_forward([x], [top])
    assert top.shape == (1000, 4, 1, 1)
    assert set(np.unique(top.data)) == {1.0, 3.0}
    assert abs((top.data == 3.0).mean() - 0.75) < 0.02  # 4000 draws: std of the mean ~0.007
    # backward routes each window's gradient to the pixel it drew
    top.diff[...] = 1
    layer.backward([top], [True], [x])
    np.testing.assert_array_equal(x.diff[:, :, 0, 1], top.data[:, :, 0, 0] == 3.0)
    np.testing.assert_array_equal(x.diff.sum(axis=3), 1)


def test_stochastic_train_picks_a_window_value_and_repeats_with_the_seed():
    layer = make_phase("pool: STOCHASTIC kernel_size: 3 stride: 2", "TRAIN")
    x, top = positive((2, 3, 7, 6)), Blob()
    layer.set_up([x], [top])
    set_random_seed(3)
    layer.run_forward([x], [top])
    first = top.data.copy()
    for n, c, i, j in np.ndindex(top.shape):
        assert first[n, c, i, j] in x.data[n, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
    set_random_seed(3)
    layer.run_forward([x], [top])
    np.testing.assert_array_equal(top.data, first)


def test_stochastic_test_is_the_probability_weighted_average():
    layer = make_phase("pool: STOCHASTIC kernel_size: 2 stride: 2", "TEST")
    x, top = positive((2, 3, 4, 6)), Blob()
    layer.set_up([x], [top])
    layer.run_forward([x], [top])
    xs = x.data.astype(np.float64).reshape(2, 3, 2, 2, 3, 2)
    np.testing.assert_allclose(top.data, (xs ** 2).sum(axis=(3, 5)) / xs.sum(axis=(3, 5)), rtol=1e-6)
    zero, ztop = Blob((1, 1, 2, 2)), Blob()  # an all-zero window gives 0, not 0/0
    layer.run_forward([zero], [ztop])
    assert ztop.data.item() == 0


def test_stochastic_windows_ignore_the_padding_as_in_caffe():
    layer = make_phase("pool: STOCHASTIC kernel_size: 2 stride: 2 pad: 1", "TEST")
    x, top = Blob((1, 1, 3, 3)), Blob()
    x.data[...] = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    layer.set_up([x], [top])
    layer.run_forward([x], [top])
    assert top.shape == (1, 1, 2, 2)  # the size counts the padding...

    def win(v):
        return np.square(v).sum() / np.sum(v)

    # ...but windows start at 0 and 2, not -1 and 1
    np.testing.assert_allclose(top.data[0, 0], [[win([1, 2, 4, 5]), win([3, 6])], [win([7, 8]), win([9])]],
                               rtol=1e-6)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_stochastic_gradient(phase):
    layer = make_phase("pool: STOCHASTIC kernel_size: 3 stride: 2", phase)
    x, top = positive((2, 2, 5, 5), 4), Blob()
    # TRAIN: the same draws every pass (seed), so the sampled pixel stays put for small steps
    assert check_gradient(layer, [x], [top], seed=11 if phase == "TRAIN" else None) > 0


def test_stochastic_refuses_a_mask_top():
    with pytest.raises(NetConfigError, match=r"layer 'pool' \(Pooling\): a second top \(the argmax mask\) needs pool: MAX"):
        make("pool: STOCHASTIC kernel_size: 2").set_up([blob((1, 1, 4, 4))], [Blob(), Blob()])


def test_h_and_w_pairs_must_come_together():
    with pytest.raises(NetConfigError, match=r"layer 'pool' \(Pooling\): stride_h and stride_w must be given together"):
        make("pool: MAX kernel_size: 2 stride_w: 2").set_up([blob((1, 1, 4, 4))], [Blob()])

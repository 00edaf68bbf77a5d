"""Convolution with a connection table (``convolution_param.connection``): forward against a
float64 reference, equivalence with ``group``, gradients, masked weights staying zero, errors."""

import numpy as np
import pytest

from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.solvers import get_solver
from pycaffe_lite.testing import check_gradient

from .layer_test_template import backward, forward, setup_layer

GRADIENT_CHECKED = {"Convolution"}

#: LeNet-5's C3 table (LeCun et al. 1998, table I): S2 map -> the C3 maps it feeds
LENET5_C3 = {
    0: [0, 4, 5, 6, 9, 10, 11, 12, 14, 15],
    1: [0, 1, 5, 6, 7, 10, 11, 12, 13, 15],
    2: [0, 1, 2, 6, 7, 8, 11, 13, 14, 15],
    3: [1, 2, 3, 6, 7, 8, 9, 12, 14, 15],
    4: [2, 3, 4, 7, 8, 9, 10, 12, 13, 15],
    5: [3, 4, 5, 8, 9, 10, 11, 13, 14, 15],
}


def table_text(pairs) -> str:
    return " ".join(f"connection: {i} connection: {o}" for i, o in pairs)


def conv_text(num_output: int, pairs=(), extra: str = "", kernel: int = 3) -> str:
    return (f'type: "Convolution" convolution_param {{ num_output: {num_output} kernel_size: {kernel} {extra} '
            f'weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" std: 0.5 }} '
            f'{table_text(pairs)} }}')


def lenet5_pairs():
    return [(i, o) for i, outs in LENET5_C3.items() for o in outs]


def reference(x, W, b, mask):
    """Valid correlation in float64, reading input i for output o only where mask[o, i]."""
    x, W = x.astype(np.float64), W.astype(np.float64)
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    y = np.zeros((N, O, H - kh + 1, Wd - kw + 1))
    for o in range(O):
        for i in range(C):
            if not mask[o, i]:
                continue
            for a in range(kh):
                for c in range(kw):
                    y[:, o] += W[o, i, a, c] * x[:, i, a:a + y.shape[2], c:c + y.shape[3]]
    return y + b[None, :, None, None]


def test_lenet5_table_forward_matches_reference():
    layer, bottom, top = setup_layer(conv_text(16, lenet5_pairs(), kernel=5), [(2, 6, 9, 8)])
    mask = layer.connection_mask
    assert mask.shape == (16, 6) and mask.sum() == 60
    assert [int(mask[:, i].sum()) for i in range(6)] == [10] * 6
    assert list(mask.sum(axis=1)) == [3] * 6 + [4] * 9 + [6]  # 3 contiguous, 4 (6 + 3), all six
    W = layer.blobs[0].data
    assert np.all(W[~mask] == 0), "set-up zeroes the unconnected filters"
    W[~mask] = 7.0  # forward must not read them even if they are set
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, reference(bottom[0].data, np.where(mask[:, :, None, None], W, 0),
                                                       layer.blobs[1].data, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [2, 3])
def test_block_diagonal_table_equals_group(group):
    C, O = 6, 6 if group == 3 else 4
    ci, co = C // group, O // group
    pairs = [(g * ci + i, g * co + o) for g in range(group) for i in range(ci) for o in range(co)]
    grouped, bottom, top_g = setup_layer(conv_text(O, extra=f"group: {group}"), [(2, C, 7, 6)])
    table, _, top_t = setup_layer(conv_text(O, pairs), [bottom[0]])
    # the grouped blob (O, C/group, k, k) placed block-diagonally in the dense (O, C, k, k) blob
    Wt = table.blobs[0].data
    Wt[...] = 0
    for g in range(group):
        Wt[g * co:(g + 1) * co, g * ci:(g + 1) * ci] = grouped.blobs[0].data[g * co:(g + 1) * co]
    table.blobs[1].data[...] = grouped.blobs[1].data
    forward(grouped, bottom, top_g)
    forward(table, bottom, top_t)
    np.testing.assert_allclose(top_t[0].data, top_g[0].data, rtol=1e-5, atol=1e-6)

    dy = np.random.default_rng(3).uniform(-1, 1, top_g[0].shape)
    backward(grouped, bottom, top_g, [dy])
    dx_grouped = bottom[0].diff.copy()
    backward(table, bottom, top_t, [dy])
    np.testing.assert_allclose(bottom[0].diff, dx_grouped, rtol=1e-5, atol=1e-5)
    dW = table.blobs[0].diff
    for g in range(group):
        np.testing.assert_allclose(dW[g * co:(g + 1) * co, g * ci:(g + 1) * ci],
                                   grouped.blobs[0].diff[g * co:(g + 1) * co], rtol=1e-5, atol=1e-5)
    assert np.all(dW[~table.connection_mask] == 0)


def test_table_gradient():
    pairs = [(0, 0), (1, 0), (2, 1), (0, 2), (2, 2), (1, 3)]
    layer, bottom, top = setup_layer(conv_text(4, pairs), [(2, 3, 5, 6)])
    assert check_gradient(layer, bottom, top, setup=False) > 0
    # the unconnected weights have a zero gradient, matching the central difference (the
    # forward does not read them)
    assert np.all(layer.blobs[0].diff[~layer.connection_mask] == 0)


def test_masked_weights_stay_zero_through_training(tmp_path):
    pairs = " ".join(f"connection: [{i}, {o}]" for i, o in lenet5_pairs())
    net = f"""
    layer {{ name: "x" type: "Input" top: "x" top: "t"
      input_param {{ shape {{ dim: 4 dim: 6 dim: 7 dim: 7 }} shape {{ dim: 4 dim: 16 dim: 3 dim: 3 }} }} }}
    layer {{ name: "c3" type: "Convolution" bottom: "x" top: "c3"
      convolution_param {{ num_output: 16 kernel_size: 5 weight_filler {{ type: "gaussian" std: 0.1 }} {pairs} }} }}
    layer {{ name: "loss" type: "EuclideanLoss" bottom: "c3" bottom: "t" top: "loss" }}
    """
    solver = get_solver(f"net_param {{ {net} }} base_lr: 0.01 momentum: 0.9 weight_decay: 0.01 "
                        'lr_policy: "fixed" max_iter: 20 display: 0 random_seed: 1')
    rng = np.random.default_rng(0)
    for name in ("x", "t"):
        blob = solver.net.blobs[name]
        blob.data[...] = rng.normal(size=blob.shape)
    layer = solver.net.layer_dict["c3"]
    W = layer.blobs[0].data
    before = W.copy()
    losses = [solver.net.forward_loss()]
    solver.step(20)
    losses.append(solver.net.forward_loss())
    assert losses[1] < losses[0]
    assert np.all(W[~layer.connection_mask] == 0)
    assert not np.allclose(W[layer.connection_mask], before[layer.connection_mask])


@pytest.mark.parametrize("extra, message", [
    ("connection: [0, 0, 1]",
     r"layer 'convolution' \(Convolution\): connection has 3 values; it lists \(input channel, output channel\) pairs"),
    ("connection: [0, 0, 1, 1, 4, 0]",
     r"connection pair \(4, 0\) is out of range: input channels 0..3, output channels 0..1"),
    ("connection: [0, 0, 1, 2]", r"connection pair \(1, 2\) is out of range"),
    ("connection: [0, 0, 1, 1, 0, 0]", r"connection pair \(0, 0\) is listed twice"),
    ("connection: [0, 0, 1, 0]", r"output channel\(s\) 1 have no input in the connection table"),
    ("group: 2 connection: [0, 0, 1, 1]", r"give either a connection table or group \(2\), not both"),
])
def test_table_errors(extra, message):
    text = f'type: "Convolution" convolution_param {{ num_output: 2 kernel_size: 1 {extra} }}'
    with pytest.raises(NetConfigError, match=message):
        setup_layer(text, [(1, 4, 3, 3)])

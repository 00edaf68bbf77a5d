import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.blob import Blob
from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.filler import fill
from pycaffe_lite.proto import caffe_pb2
from pycaffe_lite.rng import set_random_seed


def filled(shape, text):
    set_random_seed(0)
    b = Blob(shape)
    fill(b, text_format.Parse(text, caffe_pb2.FillerParameter()))
    return b.data


def test_constant_uniform_gaussian():
    assert np.all(filled((3, 4), 'type: "constant" value: 2.5') == 2.5)
    u = filled((200, 50), 'type: "uniform" min: -2 max: 3')
    assert u.min() >= -2 and u.max() <= 3 and abs(u.mean() - 0.5) < 0.05
    g = filled((200, 50), 'type: "gaussian" mean: 1 std: 2')
    assert abs(g.mean() - 1) < 0.05 and abs(g.std() - 2) < 0.05


def test_sparse_gaussian_keeps_sparse_over_num_outputs():
    g = filled((100, 400), 'type: "gaussian" std: 1 sparse: 15')
    assert abs((g != 0).mean() - 0.15) < 0.01


def test_xavier_and_msra_scales_follow_fan():
    # fan_in = count / shape[0] = 50 * 3 * 3 = 450
    x = filled((64, 50, 3, 3), 'type: "xavier"')
    a = np.sqrt(3.0 / 450)
    assert x.max() <= a and x.min() >= -a and x.max() > 0.95 * a
    m = filled((64, 50, 3, 3), 'type: "msra"')
    assert abs(m.std() - np.sqrt(2.0 / 450)) < 0.01 * 3
    # FAN_OUT = count / shape[1] = 64 * 9
    xo = filled((64, 50, 3, 3), 'type: "xavier" variance_norm: FAN_OUT')
    assert xo.max() <= np.sqrt(3.0 / 576)
    xa = filled((64, 50, 3, 3), 'type: "xavier" variance_norm: AVERAGE')
    assert xa.max() <= np.sqrt(3.0 / ((450 + 576) / 2))


def test_positive_unitball_rows_sum_to_one():
    p = filled((5, 7), 'type: "positive_unitball"')
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert p.min() >= 0


def test_bilinear_kernel():
    k = filled((1, 1, 4, 4), 'type: "bilinear"')[0, 0]
    w = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(k, np.outer(w, w))
    with pytest.raises(NetConfigError, match="square"):
        filled((1, 1, 3, 4), 'type: "bilinear"')


def test_unknown_filler_lists_known():
    with pytest.raises(NetConfigError, match="unknown filler type 'xavir'.*xavier"):
        filled((2, 2), 'type: "xavir"')


def relu_stack(filler: str, depth: int = 10, width: int = 256, batch: int = 256) -> str:
    """``depth`` x (InnerProduct ``width`` + ReLU in place) on an Input of N(0, 1) data."""
    layers = [f'layer {{ name: "x" type: "Input" top: "h0" input_param {{ shape {{ dim: {batch} dim: {width} }} }} }}']
    for i in range(1, depth + 1):
        layers.append(f'layer {{ name: "ip{i}" type: "InnerProduct" bottom: "h{i - 1}" top: "h{i}" '
                      f'inner_product_param {{ num_output: {width} weight_filler {{ {filler} }} }} }}')
        layers.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "h{i}" top: "h{i}" }}')
    return "\n".join(layers)


def relu_variances(filler: str) -> np.ndarray:
    """Variance of each ReLU's output through the stack (one forward batch, as `plite summary --activations`)."""
    from pycaffe_lite.layer import TEST
    from pycaffe_lite.net import Net
    from pycaffe_lite.summary import activation_stats

    set_random_seed(1)
    stats = activation_stats(Net(relu_stack(filler), phase=TEST))
    return np.array([stats[f"relu{i}"][0][1] ** 2 for i in range(1, 11)])


def test_deep_relu_stack_keeps_variance_only_with_he_init():
    # Var(pre-activation) = fan_in * Var(w) * E[x^2] and E[relu(y)^2] = Var(y) / 2 for a symmetric y, so the
    # ReLU outputs' second moment (and variance) changes by fan_in * Var(w) / 2 per layer:
    # msra (He): Var(w) = 2/n -> x1;  xavier: uniform(+-sqrt(3/n)), Var(w) = 1/n -> x1/2;
    # tiny gaussian 0.001: 256 * 1e-6 / 2 = 1.28e-4 per layer -> ~1e-39 after ten layers.
    he = relu_variances('type: "msra"')
    assert np.all((he[1:] / he[:-1] > 0.75) & (he[1:] / he[:-1] < 1.33))
    assert 0.5 < he[-1] / he[0] < 2.0
    xavier = relu_variances('type: "xavier"')
    assert np.all((xavier[1:] / xavier[:-1] > 0.35) & (xavier[1:] / xavier[:-1] < 0.7))
    assert 0.5 ** 9 / 2 < xavier[-1] / xavier[0] < 0.5 ** 9 * 2
    tiny = relu_variances('type: "gaussian" std: 0.001')
    assert tiny[0] < 1e-3 and tiny[-1] < 1e-30

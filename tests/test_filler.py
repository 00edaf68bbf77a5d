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

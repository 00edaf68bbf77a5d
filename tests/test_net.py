"""Net wiring: phases, in-place, splits, shared parameters, loss weights, propagate_down."""
import numpy as np
import pytest

from pycaffe_lite import TEST, TRAIN
from pycaffe_lite.errors import DataError, NetConfigError, ShapeError
from pycaffe_lite.net import Net

INPUT = 'layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 3 dim: 4 } } }\n'


def ip(name, bottom, n, top=None, extra=""):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{top or name}" {extra} '
            f'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: 0.5 }} '
            f'bias_filler {{ type: "gaussian" }} }} }}\n')


def feed(net, seed=0):
    rs = np.random.default_rng(seed)
    for name in net.inputs:
        net.blobs[name].data[...] = rs.normal(size=net.blobs[name].shape)


def numeric_input_grad(net, blob="x", step=1e-2):
    x = net.blobs[blob].data
    grad = np.zeros(x.shape)
    for idx in np.ndindex(x.shape):
        orig = float(x[idx])
        x[idx] = orig + step
        pos = net.forward_loss()
        x[idx] = orig - step
        neg = net.forward_loss()
        x[idx] = orig
        grad[idx] = (pos - neg) / (2 * step)
    return grad


def test_phase_level_and_stage_filtering():
    text = (INPUT
            + ip("a", "x", 2, extra='include { phase: TRAIN }')
            + ip("a", "x", 3, extra='include { phase: TEST }')
            + ip("lvl", "x", 2, extra='include { min_level: 1 }')
            + ip("stg", "x", 2, extra='include { stage: "s1" } ')
            + ip("nstg", "x", 2, extra='exclude { stage: "s1" }'))
    train = Net(text, phase=TRAIN)
    assert train.blobs["a"].shape == (3, 2)
    assert "lvl" not in train.blobs and "stg" not in train.blobs and "nstg" in train.blobs
    test = Net(text, phase=TEST, level=1, stages=["s1"])
    assert test.blobs["a"].shape == (3, 3)
    assert "lvl" in test.blobs and "stg" in test.blobs and "nstg" not in test.blobs


def test_in_place_layer_shares_the_blob():
    net = Net(INPUT + ip("a", "x", 4) + 'layer { name: "r" type: "ReLU" bottom: "a" top: "a" }', phase=TRAIN)
    assert net.top_vecs[2][0] is net.bottom_vecs[2][0]
    feed(net)
    net.forward()
    assert net.blobs["a"].data.min() >= 0


def test_split_is_inserted_and_backward_sums_the_branches():
    text = ("force_backward: true\n" + INPUT + ip("a", "x", 4) + ip("b", "a", 4) + ip("c", "a", 4)
            + 'layer { name: "sum1" type: "EuclideanLoss" bottom: "b" bottom: "c" top: "l" }')
    net = Net(text, phase=TRAIN)
    assert "a_a_0_split" in net.layer_names
    assert net.bottom_names[net.layer_names.index("b")] == ["a_a_0_split_0"]
    assert net.bottom_names[net.layer_names.index("c")] == ["a_a_0_split_1"]
    feed(net)
    net.forward_backward()
    analytic = net.blobs["x"].diff.copy()
    np.testing.assert_allclose(analytic, numeric_input_grad(net), rtol=2e-2, atol=2e-3)


def test_shared_parameters_are_one_blob_and_accumulate():
    shared = 'param { name: "w" } param { name: "bias" }'
    text = ("force_backward: true\n" + INPUT + ip("a", "x", 4, extra=shared) + ip("b", "x", 4, extra=shared)
            + 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" }\n')
    text = text.replace('name: "in" type: "Input" top: "x" top: "y"', 'name: "in" type: "Input" top: "x" top: "y"')
    net = Net(text, phase=TRAIN)
    wa, wb = net.params["a"][0], net.params["b"][0]
    assert wa is wb
    assert len(net.learnable_params) == 2
    feed(net)
    # identical weights and inputs -> identical outputs -> zero loss and zero gradient
    assert net.forward_loss() == pytest.approx(0.0)


def test_shared_parameter_shape_mismatch():
    text = INPUT + ip("a", "x", 4, extra='param { name: "w" }') + ip("b", "x", 5, extra='param { name: "w" }')
    with pytest.raises(ShapeError, match="shared parameter 'w' has shape \\(5, 4\\) here but \\(4, 4\\)"):
        Net(text, phase=TRAIN)


def test_loss_weights_scale_loss_and_gradient():
    base = INPUT + ip("a", "x", 4)
    net1 = Net(base + 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "y" top: "l" }', phase=TRAIN)
    net2 = Net(base + 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "y" top: "l" loss_weight: 2.5 }',
               phase=TRAIN)
    net2.copy_from(net1.to_proto())
    for n in (net1, net2):
        feed(n)
        n.clear_param_diffs()
    l1, l2 = net1.forward_backward(), net2.forward_backward()
    assert l2 == pytest.approx(2.5 * l1, rel=1e-5)
    np.testing.assert_allclose(net2.params["a"][0].diff, 2.5 * net1.params["a"][0].diff, rtol=1e-4)
    assert net1.blob_loss_weights == {"l": 1.0}


def test_propagate_down_false_stops_the_gradient():
    # (force_backward would override propagate_down: false, as in Caffe)
    text = (INPUT + ip("a", "x", 4)
            + 'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "y" top: "l" '
              'propagate_down: true propagate_down: false }')
    net = Net(text, phase=TRAIN)
    li = net.layer_names.index("l")
    assert net.bottom_need_backward[li] == [True, False]


def test_need_backward_skips_layers_below_no_loss():
    text = INPUT + ip("a", "x", 4, extra="param { lr_mult: 0 } param { lr_mult: 0 }") + ip("b", "a", 4) \
        + 'layer { name: "l" type: "EuclideanLoss" bottom: "b" bottom: "y" top: "l" }'
    net = Net(text, phase=TRAIN)
    assert net.layer_need_backward[net.layer_names.index("a")] is False
    assert net.layer_need_backward[net.layer_names.index("b")] is True
    assert net.bottom_need_backward[net.layer_names.index("b")] == [False]


def test_outputs_and_pycaffe_forward():
    net = Net(INPUT + ip("a", "x", 2), phase=TEST)
    assert net.outputs == ["y", "a"] or net.outputs == ["a", "y"]
    out = net.forward(x=np.ones((3, 4), np.float32))
    assert out["a"].shape == (3, 2)
    with pytest.raises(ShapeError, match="input 'x' has shape \\(2, 4\\)"):
        net.forward(x=np.ones((2, 4), np.float32))


def test_missing_bottom_and_unknown_type_name_the_line():
    with pytest.raises(NetConfigError, match=r"layer 'a' \(InnerProduct\): bottom blob 'nope' is not produced"):
        Net(INPUT + ip("a", "nope", 2), phase=TRAIN)
    with pytest.raises(NetConfigError, match=r":2: layer 'z': unknown layer type 'Convolutoin'.*'Convolution'"):
        Net(INPUT + 'layer { name: "z" type: "Convolutoin" bottom: "x" top: "z" }', phase=TRAIN)


def test_caffemodel_round_trip_and_mismatch(tmp_path):
    net = Net(INPUT + ip("a", "x", 4), phase=TRAIN)
    path = tmp_path / "m.caffemodel"
    net.save(path)
    other = Net(INPUT + ip("a", "x", 4), phase=TRAIN, weights=str(path))
    np.testing.assert_array_equal(other.params["a"][0].data, net.params["a"][0].data)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ShapeError, match=r"layer 'a' \(InnerProduct\): weights in m.caffemodel have shape "
                                         r"\(4, 4\) but the net expects \(5, 4\)"):
        Net(INPUT + ip("a", "x", 5), phase=TRAIN, weights=str(path))
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\xff\xff\xff garbage")
    with pytest.raises(DataError, match="bad.caffemodel"):
        net.copy_from(str(bad))
    with pytest.raises(DataError, match="no such caffemodel"):
        net.copy_from(str(tmp_path / "missing.caffemodel"))

"""Building blocks of the model-zoo nets of Caffe's era, in prototxts written here:

* a residual block as in the ResNet deploy files (Convolution -> BatchNorm -> Scale -> ReLU
  -> Convolution -> BatchNorm -> Scale, Eltwise SUM with the shortcut, ReLU), in place as
  those files write it;
* a SqueezeNet fire module (1x1 squeeze, 1x1 and 3x3 pad 1 expands, Concat).

Both build, run forward and backward with the right shapes, and their net-level gradient
matches central differences of the loss; the residual block trains on DummyData.
"""

import numpy as np
import pytest

from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.solvers import get_solver

N, C, H, W = 4, 4, 6, 6

DUMMY = f"""
layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ shape {{ dim: {N} dim: {C} dim: {H} dim: {W} }} shape {{ dim: {N} }}
    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "constant" value: 1 }} }} }}
"""

INPUT = f"""
layer {{ name: "data" type: "Input" top: "data" top: "label"
  input_param {{ shape {{ dim: {N} dim: {C} dim: {H} dim: {W} }} shape {{ dim: {N} }} }} }}
"""


def conv(name: str, bottom: str, num_output: int, kernel: int, pad: int = 0, bias: bool = True) -> str:
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
        f"convolution_param {{ num_output: {num_output} kernel_size: {kernel} pad: {pad} "
        f'bias_term: {str(bias).lower()} weight_filler {{ type: "msra" }} }} }}\n'
    )


def bn_scale_relu(blob: str, index: int, relu: bool = True) -> str:
    text = (
        f'layer {{ name: "bn{index}" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}\n'
        f'layer {{ name: "scale{index}" type: "Scale" bottom: "{blob}" top: "{blob}" '
        "scale_param { bias_term: true } }\n"
    )
    if relu:
        text += f'layer {{ name: "relu{index}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'
    return text


HEAD = """
layer { name: "pool" type: "Pooling" bottom: "%s" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def residual_net(source: str = INPUT) -> str:
    return (
        'name: "residual_block"\n'
        + source
        + conv("conv1", "data", C, 3, pad=1, bias=False)
        + bn_scale_relu("conv1", 1)
        + conv("conv2", "conv1", C, 3, pad=1, bias=False)
        + bn_scale_relu("conv2", 2, relu=False)
        + 'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "conv2" top: "sum" '
        "eltwise_param { operation: SUM } }\n"
        + 'layer { name: "relu_sum" type: "ReLU" bottom: "sum" top: "sum" }\n'
        + HEAD % "sum"
    )


def fire_net(squeeze: int = 3, expand: int = 4) -> str:
    return (
        'name: "fire_module"\n'
        + INPUT
        + conv("squeeze1x1", "data", squeeze, 1)
        + 'layer { name: "relu_squeeze" type: "ReLU" bottom: "squeeze1x1" top: "squeeze1x1" }\n'
        + conv("expand1x1", "squeeze1x1", expand, 1)
        + 'layer { name: "relu_expand1x1" type: "ReLU" bottom: "expand1x1" top: "expand1x1" }\n'
        + conv("expand3x3", "squeeze1x1", expand, 3, pad=1)
        + 'layer { name: "relu_expand3x3" type: "ReLU" bottom: "expand3x3" top: "expand3x3" }\n'
        + 'layer { name: "concat" type: "Concat" bottom: "expand1x1" bottom: "expand3x3" top: "concat" }\n'
        + HEAD % "concat"
    )


def feed(net: Net, seed: int = 0) -> None:
    rs = np.random.default_rng(seed)
    net.blobs["data"].data[...] = rs.normal(size=net.blobs["data"].shape)
    net.blobs["label"].data[...] = rs.integers(0, 3, size=net.blobs["label"].shape)


def check_net_gradient(net: Net, blob: str, count: int = 12, step: float = 1e-2, seed: int = 1) -> None:
    """Back-propagated d loss / d ``blob`` against central differences at ``count`` elements.

    float32 forward passes limit the agreement to about 1e-3 relative.
    """
    net.clear_param_diffs()
    net.forward_backward()
    analytic = net.blobs[blob].diff.copy().ravel()
    flat = net.blobs[blob].data.reshape(-1)
    for idx in np.random.default_rng(seed).choice(flat.size, size=count, replace=False):
        original = float(flat[idx])
        flat[idx] = original + step
        pos = net.forward_loss()
        flat[idx] = original - step
        neg = net.forward_loss()
        flat[idx] = original
        numeric = (pos - neg) / (2 * step)
        assert analytic[idx] == pytest.approx(numeric, rel=2e-2, abs=2e-4), f"{blob}[{idx}]"


# --- residual block ---------------------------------------------------------------------
def test_residual_block_builds_with_caffes_shapes():
    net = Net(residual_net(), phase=TEST)
    for name in ("conv1", "conv2", "sum"):
        assert net.blobs[name].shape == (N, C, H, W)
    assert net.blobs["fc"].shape == (N, 3) and net.blobs["loss"].shape == ()
    assert [b.shape for b in net.params["bn1"]] == [(C,), (C,), (1,)]
    assert [b.shape for b in net.params["scale1"]] == [(C,), (C,)]
    lr = dict(zip(net.learnable_param_names, net.params_lr))
    assert lr["bn1[0]"] == lr["bn2[2]"] == 0 and lr["scale1[0]"] == 1
    # the shortcut feeds two layers: Caffe's automatic split
    assert "data_data_0_split" in net.layer_names
    assert net.outputs == ["loss"]


def residual_train_net(phase: int, activation: str = "ReLU") -> Net:
    text = "force_backward: true\n" + residual_net().replace('type: "ReLU"', f'type: "{activation}"')
    net = Net(text, phase=phase)
    feed(net)
    if phase == TEST:  # give the global statistics something to say
        for name in ("bn1", "bn2"):
            mean, var, s = net.params[name]
            mean.data[...], var.data[...], s.data[...] = 0.2, 3.0, 1.5
    return net


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_residual_block_forward_backward_and_gradient(phase):
    net = residual_train_net(phase)
    loss = net.forward_backward()
    assert np.isfinite(loss) and loss > 0
    assert net.blobs["data"].diff.shape == (N, C, H, W) and np.any(net.blobs["data"].diff != 0)
    for name in ("conv1", "conv2", "scale1", "scale2", "fc"):
        for b in net.params[name]:
            assert np.all(np.isfinite(b.diff)) and np.any(b.diff != 0), name
    # In TRAIN, BatchNorm couples the whole batch: a 1e-2 step at one input moves every
    # pre-ReLU value a little and some cross the kink, so the numeric check runs on the same
    # block with TanH (with ReLU, the elements that disagree agree at a 3e-3 step).
    check_net_gradient(residual_train_net(phase, "TanH"), "data")


def test_residual_block_shortcut_adds_the_input():
    net = Net(residual_net(), phase=TEST)
    feed(net)
    net.forward()
    # TEST with empty statistics: BatchNorm gives x / sqrt(eps); zero the second Scale so the
    # block is relu(data + 0)
    net.params["scale2"][0].data[...] = 0
    net.params["scale2"][1].data[...] = 0
    net.forward()
    np.testing.assert_allclose(net.blobs["sum"].data, np.maximum(net.blobs["data"].data, 0), rtol=1e-6)


SOLVER = """
base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0001
max_iter: 30 display: 0 snapshot: 0 random_seed: 1
net_param { %s }
"""


def test_residual_block_trains_on_dummy_data():
    solver = get_solver(SOLVER % residual_net(DUMMY))
    net = solver.net
    assert net.layer_dict["bn1"].use_global_stats is False
    losses = []
    for _ in range(30):
        solver.step(1)
        losses.append(float(net.blobs["loss"].data))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    # the running statistics moved and their scale factor follows Caffe's rule, s = .999 s + 1
    # in float32, once per TRAIN forward
    mean, var, s = (b.data for b in net.params["bn1"])
    expected = np.float32(0)
    for _ in range(30):
        expected = np.float32(expected * np.float32(0.999)) + np.float32(1)
    assert s[0] == expected
    assert np.all(var > 0) and np.any(mean != 0)


# --- fire module ------------------------------------------------------------------------
def test_fire_module_shapes_and_concat():
    net = Net(fire_net(), phase=TEST)
    assert net.blobs["squeeze1x1"].shape == (N, 3, H, W)
    assert net.blobs["expand1x1"].shape == net.blobs["expand3x3"].shape == (N, 4, H, W)
    assert net.blobs["concat"].shape == (N, 8, H, W)
    # the squeeze output feeds both expands: a split named after its last (in-place) producer
    assert "squeeze1x1_relu_squeeze_0_split" in net.layer_names
    feed(net)
    net.forward()
    np.testing.assert_array_equal(net.blobs["concat"].data[:, :4], net.blobs["expand1x1"].data)
    np.testing.assert_array_equal(net.blobs["concat"].data[:, 4:], net.blobs["expand3x3"].data)


def test_fire_module_forward_backward_and_gradient():
    net = Net("force_backward: true\n" + fire_net(), phase=TRAIN)
    feed(net, seed=3)
    net.forward_backward()
    for name in ("squeeze1x1", "expand1x1", "expand3x3"):
        assert all(np.any(b.diff != 0) for b in net.params[name]), name
    assert net.blobs["data"].diff.shape == (N, C, H, W)
    check_net_gradient(net, "data", seed=4)

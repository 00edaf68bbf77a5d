"""Model-zoo deploy nets build with Caffe's blob shapes and run forward on random weights.

The prototxts under ``zoo/`` were written here in the architectures of the BVLC model zoo
(AlexNet, CaffeNet, GoogLeNet, R-CNN ILSVRC13, Flickr style) and, cut down, of the zoo
nets of the same era (ResNet, SqueezeNet, MobileNet, FCN); CIFAR-10 comes from Caffe's own
examples and LeNet from ``models/lenet``.  Each net is built at its deploy batch (10 for the
zoo, as in the zoo's files), every listed blob and parameter shape is checked at that
batch, and then it runs forward at batch 1 (a reshape) to keep the test fast; forward
times at batch 10 are in ``zoo/README.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pycaffe_lite import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.rng import set_random_seed
from tests.conftest import ROOT, shared_dir

ZOO = Path(__file__).parent / "zoo"


def _alexnet_shapes(lrn_first: bool) -> dict[str, tuple]:
    first, second = (55, 27) if lrn_first else (27, 13)  # where norm1/norm2 sit: before or after pooling
    return {
        "data": (10, 3, 227, 227), "conv1": (10, 96, 55, 55), "norm1": (10, 96, first, first),
        "pool1": (10, 96, 27, 27), "conv2": (10, 256, 27, 27), "norm2": (10, 256, second, second),
        "pool2": (10, 256, 13, 13), "conv3": (10, 384, 13, 13), "conv4": (10, 384, 13, 13),
        "conv5": (10, 256, 13, 13), "pool5": (10, 256, 6, 6), "fc6": (10, 4096), "fc7": (10, 4096),
    }


# conv2, conv4 and conv5 run in two groups: their weights see half the input channels
ALEXNET_PARAMS = {
    "conv1": [(96, 3, 11, 11), (96,)], "conv2": [(256, 48, 5, 5), (256,)], "conv3": [(384, 256, 3, 3), (384,)],
    "conv4": [(384, 192, 3, 3), (384,)], "conv5": [(256, 192, 3, 3), (256,)], "fc6": [(4096, 9216), (4096,)],
    "fc7": [(4096, 4096), (4096,)],
}

INCEPTION_CHANNELS = {"3a": 256, "3b": 480, "4a": 512, "4b": 512, "4c": 512, "4d": 528, "4e": 832,
                      "5a": 832, "5b": 1024}
INCEPTION_SIZE = {"3": 28, "4": 14, "5": 7}

# net file -> {blob: shape at the file's batch}, {layer: parameter shapes}, outputs
NETS: dict[str, tuple[dict, dict, list[str]]] = {
    "alexnet_deploy.prototxt": (
        {**_alexnet_shapes(True), "fc8": (10, 1000), "prob": (10, 1000)},
        {**ALEXNET_PARAMS, "fc8": [(1000, 4096), (1000,)]}, ["prob"]),
    "caffenet_deploy.prototxt": (
        {**_alexnet_shapes(False), "fc8": (10, 1000), "prob": (10, 1000)},
        {**ALEXNET_PARAMS, "fc8": [(1000, 4096), (1000,)]}, ["prob"]),
    "googlenet_deploy.prototxt": (
        {"data": (10, 3, 224, 224), "conv1/7x7_s2": (10, 64, 112, 112), "pool1/3x3_s2": (10, 64, 56, 56),
         "pool1/norm1": (10, 64, 56, 56), "conv2/3x3": (10, 192, 56, 56), "pool2/3x3_s2": (10, 192, 28, 28),
         "pool3/3x3_s2": (10, 480, 14, 14), "pool4/3x3_s2": (10, 832, 7, 7), "pool5/7x7_s1": (10, 1024, 1, 1),
         "loss3/classifier": (10, 1000), "prob": (10, 1000),
         **{f"inception_{k}/output": (10, c, INCEPTION_SIZE[k[0]], INCEPTION_SIZE[k[0]])
            for k, c in INCEPTION_CHANNELS.items()}},
        {"conv1/7x7_s2": [(64, 3, 7, 7), (64,)], "inception_5b/5x5": [(128, 48, 5, 5), (128,)],
         "loss3/classifier": [(1000, 1024), (1000,)]}, ["prob"]),
    "resnet_tiny_deploy.prototxt": (
        {"data": (10, 3, 224, 224), "conv1": (10, 64, 112, 112), "pool1": (10, 64, 56, 56),
         "res2a_branch1": (10, 256, 56, 56), "res2a_branch2a": (10, 64, 56, 56), "res2a_branch2b": (10, 64, 56, 56),
         "res2a_branch2c": (10, 256, 56, 56), "res2a": (10, 256, 56, 56), "res2b": (10, 256, 56, 56),
         "pool5": (10, 256, 1, 1), "fc1000": (10, 1000), "prob": (10, 1000)},
        {"conv1": [(64, 3, 7, 7)], "bn_conv1": [(64,), (64,), (1,)], "scale_conv1": [(64,), (64,)],
         "res2a_branch1": [(256, 64, 1, 1)], "res2b_branch2b": [(64, 64, 3, 3)]}, ["prob"]),
    "squeezenet_tiny_deploy.prototxt": (
        {"data": (10, 3, 227, 227), "conv1": (10, 64, 113, 113), "pool1": (10, 64, 56, 56),
         "fire2/squeeze1x1": (10, 16, 56, 56), "fire2/expand3x3": (10, 64, 56, 56), "fire2/concat": (10, 128, 56, 56),
         "fire3/concat": (10, 128, 56, 56), "pool3": (10, 128, 28, 28), "fire4/concat": (10, 256, 28, 28),
         "fire5/concat": (10, 256, 28, 28), "pool5": (10, 256, 14, 14), "conv10": (10, 1000, 14, 14),
         "pool10": (10, 1000, 1, 1), "prob": (10, 1000, 1, 1)},
        {"fire4/expand3x3": [(128, 32, 3, 3), (128,)], "conv10": [(1000, 256, 1, 1), (1000,)]}, ["prob"]),
    "mobilenet_tiny_deploy.prototxt": (
        {"data": (10, 3, 224, 224), "conv1": (10, 32, 112, 112), "conv2_1/dw": (10, 32, 112, 112),
         "conv2_1/sep": (10, 64, 112, 112), "conv2_2/dw": (10, 64, 56, 56), "conv2_2/sep": (10, 128, 56, 56),
         "pool6": (10, 128, 1, 1), "fc7": (10, 1000, 1, 1), "prob": (10, 1000, 1, 1)},
        # depthwise: group = channels, one 3x3 filter per channel
        {"conv2_1/dw": [(32, 1, 3, 3)], "conv2_2/dw": [(64, 1, 3, 3)], "conv2_2/sep": [(128, 64, 1, 1)]}, ["prob"]),
    "fcn_tiny_deploy.prototxt": (
        {"data": (10, 3, 64, 64), "conv1_1": (10, 16, 262, 262), "pool1": (10, 16, 131, 131),
         "pool2": (10, 32, 66, 66), "fc6": (10, 64, 60, 60), "score_fr": (10, 21, 60, 60),
         "upscore": (10, 21, 244, 244), "score": (10, 21, 64, 64)},
        {"upscore": [(21, 1, 8, 8)], "fc6": [(64, 32, 7, 7), (64,)]}, ["score"]),
}
SLOW_NETS = {  # CaffeNet's body again with other heads; built in one test marked slow
    "rcnn_ilsvrc13_deploy.prototxt": (
        {**_alexnet_shapes(False), "fc-rcnn": (10, 200)}, {"fc-rcnn": [(200, 4096), (200,)]}, ["fc-rcnn"]),
    "flickr_style_deploy.prototxt": (
        {**_alexnet_shapes(False), "fc8_flickr": (10, 20), "prob": (10, 20)},
        {"fc8_flickr": [(20, 4096), (20,)]}, ["prob"]),
}
CIFAR_QUICK = {"conv1": (1, 32, 32, 32), "pool1": (1, 32, 16, 16), "conv2": (1, 32, 16, 16),
               "pool2": (1, 32, 8, 8), "conv3": (1, 64, 8, 8), "pool3": (1, 64, 4, 4), "ip1": (1, 64),
               "ip2": (1, 10), "prob": (1, 10)}
CIFAR_FULL = {"conv1": (1, 32, 32, 32), "pool1": (1, 32, 16, 16), "norm1": (1, 32, 16, 16),
              "pool2": (1, 32, 8, 8), "norm2": (1, 32, 8, 8), "conv3": (1, 64, 8, 8), "pool3": (1, 64, 4, 4),
              "ip1": (1, 10), "prob": (1, 10)}
LENET = {"data": (64, 1, 28, 28), "conv1": (64, 20, 24, 24), "pool1": (64, 20, 12, 12), "conv2": (64, 50, 8, 8),
         "pool2": (64, 50, 4, 4), "ip1": (64, 500), "ip2": (64, 10), "prob": (64, 10)}


def build(path: str | Path, seed: int = 0) -> Net:
    set_random_seed(seed)
    net = Net(str(path), phase=TEST)
    # as after training: BatchNorm's running statistics give mean 0 and variance 1
    for layer in net.layers:
        if layer.type == "BatchNorm":
            mean, var, factor = layer.blobs
            mean.data[...], var.data[...], factor.data[...] = 0.0, 1.0, 1.0
    return net


def randomize(net: Net, seed: int = 1) -> None:
    """Gaussian weights for nets whose file has no fillers (Caffe's deploy files often have none)."""
    rs = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rs.standard_normal(b.shape, dtype=np.float32) * np.float32(0.05)


def forward_at(net: Net, batch: int, seed: int = 2) -> dict[str, np.ndarray]:
    name = net.inputs[0]
    shape = (batch,) + net.blobs[name].shape[1:]
    net.blobs[name].reshape(*shape)
    net.reshape()
    return net.forward(**{name: np.random.default_rng(seed).normal(0, 50, size=shape).astype(np.float32)})


def check_shapes(net: Net, blobs: dict, params: dict, outputs: list[str]) -> None:
    assert net.outputs == outputs
    for name, shape in blobs.items():
        assert net.blobs[name].shape == shape, name
    for name, shapes in params.items():
        assert [b.shape for b in net.params[name]] == shapes, name


def check_outputs(net: Net, out: dict, outputs: list[str], batch: int) -> None:
    for name in outputs:
        assert out[name].shape[0] == batch and np.isfinite(out[name]).all(), name
        if name == "prob":
            np.testing.assert_allclose(out[name].sum(axis=1), 1.0, rtol=1e-5)


def check_googlenet(net: Net) -> None:
    p = "inception_5b/"
    branches = [net.blobs[p + b].data for b in ("1x1", "3x3", "5x5", "pool_proj")]
    np.testing.assert_array_equal(net.blobs[p + "output"].data, np.concatenate(branches, axis=1))


def check_resnet(net: Net) -> None:
    # projection shortcut, then identity: relu(branch1 + branch2c), relu(res2a + branch2c)
    b = net.blobs
    np.testing.assert_allclose(b["res2a"].data, np.maximum(b["res2a_branch1"].data + b["res2a_branch2c"].data, 0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b["res2b"].data, np.maximum(b["res2a"].data + b["res2b_branch2c"].data, 0),
                               rtol=1e-5, atol=1e-5)


def check_squeezenet(net: Net) -> None:
    b = net.blobs
    np.testing.assert_array_equal(b["fire5/concat"].data[:, :128], b["fire5/expand1x1"].data)
    np.testing.assert_array_equal(b["fire5/concat"].data[:, 128:], b["fire5/expand3x3"].data)


def check_mobilenet(net: Net) -> None:
    # one depthwise output channel depends on its own input channel only
    net.forward(start="conv2_1/dw", end="conv2_1/dw")  # the convolution alone (BatchNorm... work in place)
    before = net.blobs["conv2_1/dw"].data.copy()
    net.blobs["conv1"].data[:, 5] += 1.0
    net.forward(start="conv2_1/dw", end="conv2_1/dw")
    changed = np.any(net.blobs["conv2_1/dw"].data != before, axis=(0, 2, 3))
    assert changed.tolist() == [c == 5 for c in range(32)]


def check_fcn(net: Net) -> None:
    b = net.blobs
    np.testing.assert_array_equal(b["score"].data, b["upscore"].data[:, :, 89:153, 89:153])
    # fully convolutional: any input size gives a score map of that size
    net.blobs["data"].reshape(1, 3, 50, 77)
    net.reshape()
    assert net.forward()["score"].shape == (1, 21, 50, 77)


CHECKS = {"googlenet_deploy.prototxt": check_googlenet, "resnet_tiny_deploy.prototxt": check_resnet,
          "squeezenet_tiny_deploy.prototxt": check_squeezenet, "mobilenet_tiny_deploy.prototxt": check_mobilenet,
          "fcn_tiny_deploy.prototxt": check_fcn}


@pytest.mark.parametrize("name", list(NETS))
def test_zoo_net_builds_with_caffes_shapes_and_runs_forward(name):
    blobs, params, outputs = NETS[name]
    net = build(ZOO / name)
    check_shapes(net, blobs, params, outputs)
    out = forward_at(net, 1)
    check_outputs(net, out, outputs, 1)
    if name in CHECKS:
        CHECKS[name](net)


@pytest.mark.slow
def test_caffenet_with_rcnn_and_flickr_heads():
    for name, (blobs, params, outputs) in SLOW_NETS.items():
        net = build(ZOO / name)
        assert net.inputs == ["data"]  # R-CNN's legacy input/input_dim header gives the same input
        check_shapes(net, blobs, params, outputs)
        check_outputs(net, forward_at(net, 1), outputs, 1)
        del net  # 240 MB of weights each


@pytest.mark.parametrize("name, shapes", [("cifar10_quick.prototxt", CIFAR_QUICK),
                                          ("cifar10_full.prototxt", CIFAR_FULL)])
def test_cifar10_deploy_nets(name, shapes):
    net = build(shared_dir("caffe-examples", "cifar10") / name)
    randomize(net)
    check_shapes(net, shapes, {}, ["prob"])
    check_outputs(net, forward_at(net, 10), ["prob"], 10)


def test_lenet_deploy_net():
    net = build(ROOT / "models" / "lenet" / "lenet_deploy.prototxt")
    randomize(net)
    check_shapes(net, LENET, {"conv1": [(20, 1, 5, 5), (20,)], "ip1": [(500, 800), (500,)]}, ["prob"])
    check_outputs(net, forward_at(net, 64), ["prob"], 64)


def test_zoo_folder_holds_exactly_the_tested_nets():
    assert sorted(p.name for p in ZOO.glob("*.prototxt")) == sorted([*NETS, *SLOW_NETS])

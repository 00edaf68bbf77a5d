"""Zoo-style vision nets written here in the shapes of the originals: a fully convolutional net
(Convolution -> fixed bilinear Deconvolution -> Crop against the data, as FCN does) and an
SPP-net head (any input size -> one fixed-length vector)."""
import numpy as np
import pytest

from pycaffe_lite import TEST, TRAIN
from pycaffe_lite.net import Net

# FCN-32s in miniature: conv1 pads by 5 so the upsampled score map overhangs the input and is
# cropped back onto it; upscore is a per-class (group = classes) bilinear kernel, frozen.
FCN = """
name: "fcn_tiny"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 17 dim: 19 } shape { dim: 2 dim: 1 dim: 17 dim: 19 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 8 kernel_size: 3 pad: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score_fr" type: "Convolution" bottom: "pool1" top: "score_fr"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "upscore" type: "Deconvolution" bottom: "score_fr" top: "upscore"
        param { lr_mult: 0 }
        convolution_param { num_output: 4 bias_term: false kernel_size: 4 stride: 2 group: 4
                            weight_filler { type: "bilinear" } } }
layer { name: "score" type: "Crop" bottom: "upscore" bottom: "data" top: "score" crop_param { axis: 2 offset: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
        include { phase: TRAIN } loss_param { ignore_label: 255 normalize: false } }
"""

SHAPES = {"data": (2, 3, 17, 19), "conv1": (2, 8, 25, 27), "pool1": (2, 8, 13, 14), "score_fr": (2, 4, 13, 14),
          "upscore": (2, 4, 28, 30), "score": (2, 4, 17, 19)}


def fcn_net(phase=TRAIN, seed=0):
    from pycaffe_lite.rng import set_random_seed

    set_random_seed(seed)
    net = Net(FCN, phase=phase)
    rs = np.random.default_rng(seed)
    net.blobs["data"].data[...] = rs.normal(size=SHAPES["data"])
    label = rs.integers(0, 4, size=(2, 1, 17, 19)).astype(np.float32)
    label[0, 0, :3] = 255  # an ignored border, as in VOC
    net.blobs["label"].data[...] = label
    return net


def test_fcn_builds_with_caffes_shapes():
    net = fcn_net()
    for name, shape in SHAPES.items():
        assert net.blobs[name].shape == shape, name
    up = net.layer_dict["upscore"]
    assert up.blobs[0].shape == (4, 1, 4, 4)  # (C_in, C_out / group, kh, kw)
    # every group holds the same bilinear kernel
    k1 = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(up.blobs[0].data[:, 0], np.broadcast_to(np.outer(k1, k1), (4, 4, 4)), rtol=1e-6)
    assert net.params_lr[net.learnable_params.index(up.blobs[0])] == 0


def test_fcn_forward_backward_trains_below_the_frozen_upsampling():
    net = fcn_net()
    loss = net.forward_loss()
    assert np.isfinite(loss) and loss > 0
    # Crop put the upsampled scores back onto the input: score == upscore[..., 5:22, 5:24]
    np.testing.assert_array_equal(net.blobs["score"].data, net.blobs["upscore"].data[:, :, 5:22, 5:24])
    net.clear_param_diffs()
    net.backward()
    up = net.layer_dict["upscore"]
    assert not up.blobs[0].diff.any()  # lr_mult 0: no gradient is even computed
    assert net.layer_dict["conv1"].blobs[0].diff.any() and net.layer_dict["score_fr"].blobs[1].diff.any()
    # the overhang that Crop cut away gets no gradient
    d = net.blobs["upscore"].diff
    assert not d[:, :, :5].any() and not d[:, :, 22:].any() and d[:, :, 5:22, 5:24].any()
    before = up.blobs[0].data.copy()
    net.update()
    np.testing.assert_array_equal(up.blobs[0].data, before)


def test_fcn_gradient_through_deconvolution_and_crop():
    net = fcn_net(seed=1)
    net.forward_loss()
    net.clear_param_diffs()
    net.backward()
    w = net.layer_dict["score_fr"].blobs[0]
    analytic = w.diff.copy()
    for idx in [(0, 0, 0, 0), (1, 3, 0, 0), (3, 7, 0, 0)]:
        orig = float(w.data[idx])
        w.data[idx] = orig + 1e-2
        pos = net.forward_loss()
        w.data[idx] = orig - 1e-2
        neg = net.forward_loss()
        w.data[idx] = orig
        assert (pos - neg) / 2e-2 == pytest.approx(analytic[idx], rel=2e-2, abs=2e-3)


def test_fcn_deploy_output_matches_the_input_size():
    net = fcn_net(phase=TEST)
    assert "loss" not in net.blobs
    net.forward()
    assert net.blobs["score"].shape == (2, 4, 17, 19)
    net.blobs["data"].reshape(1, 3, 24, 31)
    net.reshape()
    net.forward()
    assert net.blobs["score"].shape == (1, 4, 24, 31)


SPP_NET = """
name: "spp_tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 13 dim: 13 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "spp" type: "SPP" bottom: "norm1" top: "spp" spp_param { pyramid_height: 3 pool: MAX } }
layer { name: "fc" type: "InnerProduct" bottom: "spp" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
"""


def test_spp_net_takes_any_input_size():
    net = Net(SPP_NET, phase=TEST)
    assert net.blobs["spp"].shape == (2, 4 * 21)
    for h, w in [(13, 13), (20, 16), (9, 31)]:
        net.blobs["data"].reshape(2, 3, h, w)
        net.blobs["data"].data[...] = np.random.default_rng(h).normal(size=(2, 3, h, w))
        net.reshape()
        net.forward()
        assert net.blobs["fc"].shape == (2, 5)
        assert np.isfinite(net.blobs["fc"].data).all()

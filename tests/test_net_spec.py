"""NetSpec: LeNet written in Python gives models/lenet's train net (text that parses back, the
same layers and parameters, the same built net); naming, in-place, ntop, param lists, enums
and the errors for a misspelt parameter."""
# ruff: noqa: C408  (dict(...) keyword calls are how pycaffe users write NetSpec parameters)
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite import TRAIN, L, NetSpec, P, set_random_seed
from pycaffe_lite.errors import NetConfigError
from pycaffe_lite.io.prototxt import read_net
from pycaffe_lite.net import Net, filter_net
from pycaffe_lite.net_spec import layers, param_name_dict, params, to_proto
from pycaffe_lite.proto import caffe_pb2

LENET = Path(__file__).resolve().parents[1] / "models" / "lenet" / "lenet_train_test.prototxt"


def lenet(source: str, batch_size: int = 64) -> caffe_pb2.NetParameter:
    """models/lenet/lenet_train_test.prototxt's TRAIN net, the pycaffe way."""
    weights = dict(weight_filler=dict(type="xavier"), bias_filler=dict(type="constant"))
    lr = [dict(lr_mult=1), dict(lr_mult=2)]
    n = NetSpec()
    n.data, n.label = L.Data(name="mnist", include=dict(phase=TRAIN), transform_param=dict(scale=0.00390625),
                             source=source, batch_size=batch_size, backend=P.Data.LMDB, ntop=2)
    n.conv1 = L.Convolution(n.data, param=lr, num_output=20, kernel_size=5, stride=1, **weights)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=lr, num_output=50, kernel_size=5, stride=1, **weights)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, param=lr, num_output=500, **weights)
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, param=lr, num_output=10, **weights)
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    proto = n.to_proto()
    proto.name = "LeNet"
    return proto


def reference_train_net() -> caffe_pb2.NetParameter:
    param = read_net(str(LENET)).param
    param.state.phase = TRAIN
    filtered, _ = filter_net(param, [], None)
    filtered.ClearField("state")
    return filtered


def test_lenet_spec_is_the_train_net_of_models_lenet():
    spec = lenet("data/mnist/mnist_train_lmdb")
    parsed = text_format.Parse(str(spec), caffe_pb2.NetParameter())  # str() is prototxt text
    assert parsed == spec
    reference = reference_train_net()
    assert [(lp.name, lp.type) for lp in parsed.layer] == [(lp.name, lp.type) for lp in reference.layer]
    for ours, theirs in zip(parsed.layer, reference.layer):
        assert ours == theirs, f"layer {ours.name}:\n{ours}\n!=\n{theirs}"
    assert parsed == reference


def test_lenet_spec_builds_the_same_net(mnist_small):
    source = str(mnist_small / "mnist_train_lmdb")
    reference = reference_train_net()
    reference.layer[0].data_param.source = source
    set_random_seed(11)
    ref = Net(reference, TRAIN)
    set_random_seed(11)
    ours = Net(lenet(source), TRAIN)
    assert ours.layer_names == ref.layer_names
    assert {n: b.shape for n, b in ours.blobs.items()} == {n: b.shape for n, b in ref.blobs.items()}
    for a, b in zip(ours.learnable_params, ref.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    assert ours.params_lr == ref.params_lr == [1, 2] * 4
    assert ours.forward_loss() == ref.forward_loss()


def test_param_names_come_from_the_schema():
    names = param_name_dict()
    assert names["Convolution"] == "convolution_param" and names["InnerProduct"] == "inner_product_param"
    assert names["ReLU"] == "relu_param" and names["HDF5Data"] == "hdf5_data_param"
    assert names["Python"] == "python_param" and names["Transformation"] == "transform_param"
    fields = [f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields if f.name.endswith("_param")]
    assert sorted(names.values()) == sorted(fields)
    assert layers is L and params is P


def test_naming_in_place_ntop_and_lists():
    n = NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 3]))
    unnamed = L.InnerProduct(n.x, num_output=4)
    n.act = L.ReLU(unnamed, in_place=True)
    n.silence = L.Silence(n.act, ntop=0)
    n["loss"] = L.Python(n.act, module="pyloss", layer="EuclideanLossLayer", param_str="{}", loss_weight=1,
                         propagate_down=[True], include=[dict(phase=TRAIN), dict(stage="s")])
    proto = n.to_proto()
    by_name = {lp.name: lp for lp in proto.layer}
    assert list(by_name) == ["x", "InnerProduct1", "act", "silence", "loss"]  # ntop=0: the layer's own name
    assert list(by_name["act"].top) == ["InnerProduct1"] == list(by_name["act"].bottom)
    assert not by_name["silence"].top
    assert list(by_name["x"].input_param.shape[0].dim) == [2, 3]
    loss = by_name["loss"]
    assert loss.python_param.module == "pyloss" and loss.python_param.param_str == "{}"
    assert list(loss.loss_weight) == [1] and list(loss.propagate_down) == [True]
    assert [r.phase for r in loss.include] == [TRAIN, 0] and loss.include[1].stage == ["s"]
    assert n.keys() == ["x", "act", "silence", "loss"] and n.loss is n.vals()[-1]
    del n["silence"]
    assert n.keys() == ["x", "act", "loss"]


def test_module_level_to_proto_and_enum_names():
    top = L.Pooling(L.Input(shape=dict(dim=[1, 1, 4, 4])), pool="AVE", kernel_size=2)
    proto = to_proto(top)
    assert [lp.name for lp in proto.layer] == ["Input1", "Pooling1"]
    assert proto.layer[1].pooling_param.pool == P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert top.to_proto() == proto


def test_errors_name_the_layer_and_the_field():
    n = NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 3]))
    n.c = L.Convolution(n.x, kernal_size=3)
    with pytest.raises(NetConfigError, match=r"layer 'c' \(Convolution\): unknown parameter 'kernal_size': neither "
                                             r"convolution_param nor LayerParameter has that field \(did you mean "
                                             r"'kernel_size'\?\)"):
        n.to_proto()
    n.c = L.Convolution(n.x, weight_filler=dict(tpye="xavier"))
    with pytest.raises(NetConfigError, match=r"layer 'c' \(Convolution\): convolution_param.weight_filler.tpye: "
                                             r"FillerParameter has no field 'tpye'"):
        n.to_proto()
    n.c = L.Deconvolution(n.x, num_output=3)
    with pytest.raises(NetConfigError, match=r"type 'Deconvolution' has no \*_param of its own; give it inside "
                                             r"the \*_param the type reads, e.g. convolution_param=dict"):
        n.to_proto()
    n.c = L.Pooling(n.x, pool="AVG")
    with pytest.raises(NetConfigError, match=r"pooling_param.pool: 'AVG' is not a value of PoolMethod"):
        n.to_proto()
    n.c = L.Pooling(n.x, kernel_size="2")
    with pytest.raises(NetConfigError, match=r"pooling_param.kernel_size: cannot set '2'"):
        n.to_proto()
    n.c = L.Convolution(n.x, weight_filler="xavier")
    with pytest.raises(NetConfigError, match=r"convolution_param.weight_filler: FillerParameter needs a dict"):
        n.to_proto()
    with pytest.raises(NetConfigError, match=r"L.ReLU: bottom 0 is str 'x', not a layer output"):
        L.ReLU("x")
    with pytest.raises(NetConfigError, match=r"NetSpec.pair: assign a layer output"):
        n.pair = L.Data(ntop=2)
    with pytest.raises(AttributeError, match=r"NetSpec has no top 'nope' \(tops so far: x, c\)"):
        n.nope  # noqa: B018
    with pytest.raises(AttributeError, match=r"caffe.PoolingParameter has no value 'MAXX' \(its enum values: MAX, "):
        P.Pooling.MAXX  # noqa: B018
    with pytest.raises(AttributeError, match=r"the schema has no message 'PoolinParameter'"):
        P.Poolin  # noqa: B018

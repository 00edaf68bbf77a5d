"""Prototxt reading: every Caffe example parses, legacy formats upgrade like Caffe's
upgrade_proto, errors name file:line, and the source map gives each layer's line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format

from pycaffe_lite.errors import DataError, NetConfigError, PrototxtSyntaxError, SolverConfigError
from pycaffe_lite.io.prototxt import (
    SOLVER_TYPES,
    V1_LAYER_TYPES,
    parse_net,
    read_net,
    read_solver,
    upgrade_file,
    upgrade_net,
    write_text,
)
from pycaffe_lite.proto import caffe_pb2
from tests.conftest import SHARED

SHARED_REASON = f"{SHARED} is absent: the shared Caffe example prototxts are not available here"
PROTOTXTS = (
    sorted((SHARED / "caffe-examples").rglob("*.prototxt")) + sorted((SHARED / "legacy").rglob("*.prototxt"))
    if SHARED.is_dir()
    else []
)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(SHARED_REASON)
    return path


def _copy(message):
    out = type(message)()
    out.CopyFrom(message)
    return out


# ---------------------------------------------------------------------------
# Every shared prototxt parses, and its layer lines point at layer blocks


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in PROTOTXTS]
    or [pytest.param(None, marks=pytest.mark.skip(reason=SHARED_REASON))],
)
def test_shared_prototxt_parses(path):
    if "solver" in path.name:
        parsed = read_solver(path)
        assert parsed.param.HasField("base_lr") or parsed.param.HasField("type")
        assert not parsed.param.HasField("solver_type")
        return
    parsed = read_net(path)
    net = parsed.param
    assert parsed.filename == str(path)
    assert len(net.layer) > 0 and len(net.layers) == 0
    assert not (len(net.input) or len(net.input_dim) or len(net.input_shape))
    assert len(parsed.layer_lines) == len(net.layer)
    lines = path.read_text().splitlines()
    for line in parsed.layer_lines:
        assert line is not None
        assert lines[line - 1].lstrip().startswith(("layer", "input")), (path, line)


# ---------------------------------------------------------------------------
# V1 upgrade


def test_lenet_v1_upgrades_to_caffes_lenet():
    upgraded = read_net(shared("legacy", "lenet_v1.prototxt")).param
    modern = read_net(shared("caffe-examples", "mnist", "lenet_train_test.prototxt")).param
    assert [layer.type for layer in upgraded.layer] == [layer.type for layer in modern.layer]
    assert [layer.type for layer in upgraded.layer] == [
        "Data", "Data", "Convolution", "Pooling", "Convolution", "Pooling",
        "InnerProduct", "ReLU", "InnerProduct", "Accuracy", "SoftmaxWithLoss",
    ]  # fmt: skip
    # What legitimately differs: the net's name, the LMDB paths (relative to a
    # different folder), and ip1, whose V1 weight_decay: 1, 0 spares its bias
    # from decay where Caffe's lenet_train_test decays both.
    assert (upgraded.name, modern.name) == ("LeNetV1", "LeNet")
    for got, want in zip(upgraded.layer, modern.layer, strict=True):
        got, want = _copy(got), _copy(want)
        if got.type == "Data":
            assert want.data_param.source.endswith(got.data_param.source)
            got.data_param.ClearField("source")
            want.data_param.ClearField("source")
        if got.name == "ip1":
            assert [p.decay_mult for p in got.param] == [1, 0]
            assert [p.lr_mult for p in got.param] == [1, 2]
            for spec in got.param:
                spec.ClearField("decay_mult")
        assert got == want, f"layer {got.name} differs:\n{got}\nvs\n{want}"


def test_autoencoder_v1_upgrades():
    path = shared("legacy", "autoencoder_v1.prototxt")
    parsed = read_net(path)
    net = parsed.param
    assert [layer.type for layer in net.layer] == [
        "Input", "Flatten", "InnerProduct", "Sigmoid", "InnerProduct", "Sigmoid",
        "SigmoidCrossEntropyLoss", "EuclideanLoss",
    ]  # fmt: skip
    data = net.layer[0]
    assert (data.name, list(data.top)) == ("input", ["data"])
    assert [list(s.dim) for s in data.input_param.shape] == [[8, 1, 6, 6]]
    encode = net.layer[2]
    assert [(p.lr_mult, p.decay_mult) for p in encode.param] == [(1, 1), (1, 0)]
    assert encode.inner_product_param.num_output == 12
    assert encode.inner_product_param.weight_filler.std == pytest.approx(0.1)
    decode = net.layer[4]
    assert [p.lr_mult for p in decode.param] == [1, 1]
    assert not any(p.HasField("decay_mult") for p in decode.param)
    assert list(net.layer[6].loss_weight) == [1] and list(net.layer[7].loss_weight) == [0]
    assert list(net.layer[7].bottom) == ["decode1neuron", "flatdata"]
    lines = path.read_text().splitlines()
    assert lines[parsed.layer_lines[0] - 1].startswith("input:")
    assert lines[parsed.field_line(2, "param") - 1].strip().startswith("blobs_lr")


def test_v1_copies_names_share_modes_blobs_and_every_param():
    text = """
    layers {
      name: "c" type: CONVOLUTION bottom: "x" top: "y"
      param: "w" param: "b" blob_share_mode: PERMISSIVE
      blobs_lr: 3 weight_decay: 0.5
      blobs { shape { dim: 1 } data: 4 }
      exclude { phase: TEST stage: "deploy" }
      convolution_param { num_output: 2 kernel_size: 3 }
      loss_param { ignore_label: 3 }
      transform_param { mirror: true }
    }
    """
    layer = parse_net(text).layer[0]
    assert (layer.name, layer.type) == ("c", "Convolution")
    assert [p.name for p in layer.param] == ["w", "b"]
    assert layer.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert (layer.param[0].lr_mult, layer.param[0].decay_mult) == (3, 0.5)
    assert not layer.param[1].HasField("lr_mult")
    assert list(layer.blobs[0].data) == [4]
    assert layer.exclude[0].phase == caffe_pb2.TEST and list(layer.exclude[0].stage) == ["deploy"]
    assert layer.convolution_param.num_output == 2 and list(layer.convolution_param.kernel_size) == [3]
    assert layer.loss_param.ignore_label == 3 and layer.transform_param.mirror


def test_v1_tables_cover_the_schema():
    assert set(V1_LAYER_TYPES) == set(caffe_pb2.V1LayerParameter.LayerType.keys())
    layer_fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for fd in caffe_pb2.V1LayerParameter.DESCRIPTOR.fields:
        if fd.name.endswith("_param"):
            assert fd.name in layer_fields and layer_fields[fd.name].message_type is fd.message_type
    assert V1_LAYER_TYPES["SOFTMAX_LOSS"] == "SoftmaxWithLoss"
    assert V1_LAYER_TYPES["SIGMOID_CROSS_ENTROPY_LOSS"] == "SigmoidCrossEntropyLoss"


def test_v1_data_layer_transform_fields_move():
    text = """
    layers { name: "d" type: DATA top: "data"
      data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto" crop_size: 3 mirror: true }
    }
    layers { name: "i" type: IMAGE_DATA top: "img" image_data_param { source: "list.txt" scale: 2 } }
    """
    net = parse_net(text)
    data = net.layer[0]
    assert data.transform_param.scale == 0.5 and data.transform_param.mean_file == "m.binaryproto"
    assert data.transform_param.crop_size == 3 and data.transform_param.mirror
    for name in ("scale", "mean_file", "crop_size", "mirror"):
        assert not data.data_param.HasField(name)
    assert data.data_param.source == "db" and data.data_param.batch_size == 4
    assert net.layer[1].transform_param.scale == 2
    assert not net.layer[1].image_data_param.HasField("scale")


def test_mixed_layer_and_layers_is_an_error():
    text = 'layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }\n'
    with pytest.raises(NetConfigError, match=r"mixed\.prototxt:2: .*'layer'.*'layers'"):
        read_net(text, filename="mixed.prototxt")


def test_upgrade_net_carries_blobs_of_a_binary_v1_net():
    net = caffe_pb2.NetParameter()
    v1 = net.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    v1.blobs.add(num=1, channels=1, height=2, width=3, data=[1, 2, 3, 4, 5, 6])
    net.input.append("data")  # legacy caffemodels list inputs without shapes
    wire = net.SerializeToString()
    upgraded = upgrade_net(caffe_pb2.NetParameter.FromString(wire))
    assert [layer.type for layer in upgraded.layer] == ["InnerProduct"]
    assert list(upgraded.layer[0].blobs[0].data) == [1, 2, 3, 4, 5, 6]
    assert len(upgraded.input) == 0 and len(upgraded.layers) == 0


# ---------------------------------------------------------------------------
# V0 upgrade


V0_NET = """name: "v0"
layers {
  layer { name: "d" type: "data" source: "db" batchsize: 4 scale: 0.5 cropsize: 3 mirror: true
          meanfile: "mean.binaryproto" rand_skip: 2 }
  top: "data" top: "label"
}
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 1 group: 2 biasterm: false
          weight_filler { type: "gaussian" std: 0.01 } blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } bottom: "conv1" top: "pool1" }
layers { layer { name: "norm" type: "lrn" local_size: 3 alpha: 0.1 beta: 0.5 } bottom: "pool1" top: "norm" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "norm" top: "norm" }
layers { layer { name: "ip" type: "innerproduct" num_output: 10 } bottom: "norm" top: "ip" }
layers { layer { name: "loss" type: "softmax_loss" } bottom: "ip" bottom: "label" }
"""


def test_v0_net_upgrades():
    parsed = read_net(V0_NET, filename="v0.prototxt")
    net = parsed.param
    assert [layer.type for layer in net.layer] == [
        "Data", "Convolution", "Pooling", "LRN", "Dropout", "InnerProduct", "SoftmaxWithLoss",
    ]  # fmt: skip
    data = net.layer[0]
    assert (data.data_param.source, data.data_param.batch_size, data.data_param.rand_skip) == ("db", 4, 2)
    t = data.transform_param
    assert (t.scale, t.crop_size, t.mirror, t.mean_file) == (0.5, 3, True, "mean.binaryproto")
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]  # the padding layer is folded into the conv
    cp = conv.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.stride), list(cp.pad)) == (8, [5], [1], [2])
    assert cp.group == 2 and not cp.bias_term and cp.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    pool = net.layer[2].pooling_param
    assert (pool.pool, pool.kernel_size, pool.stride) == (caffe_pb2.PoolingParameter.AVE, 3, 2)
    lrn = net.layer[3].lrn_param
    assert (lrn.local_size, lrn.alpha, lrn.beta) == (3, pytest.approx(0.1), 0.5)
    assert net.layer[4].dropout_param.dropout_ratio == pytest.approx(0.3)
    assert net.layer[5].inner_product_param.num_output == 10
    assert parsed.layer_lines == [2, 8, 13, 14, 15, 16, 17]
    assert parsed.field_line(1, "convolution_param") == 9


def test_v0_unknown_type_is_an_error():
    with pytest.raises(NetConfigError, match=r"v0\.prototxt:1: .*unknown V0 layer type 'convolution'"):
        read_net('layers { layer { name: "c" type: "convolution" } }', filename="v0.prototxt")


# ---------------------------------------------------------------------------
# Legacy inputs, BatchNorm params


def test_input_dim_becomes_one_input_layer_first():
    text = """name: "deploy"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 5
input: "im_info"
input_dim: 1 input_dim: 3 input_dim: 1 input_dim: 1
layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
"""
    parsed = read_net(text)
    net = parsed.param
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data", "im_info"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 4, 5], [1, 3, 1, 1]]
    assert net.layer[1].name == "relu"
    assert parsed.layer_lines == [2, 6]
    assert not (len(net.input) or len(net.input_dim) or len(net.input_shape))


def test_input_shape_becomes_input_layer():
    text = 'input: "a"\ninput_shape { dim: 2 dim: 3 }\ninput: "b"\ninput_shape { dim: 7 }\n'
    first = parse_net(text).layer[0]
    assert list(first.top) == ["a", "b"]
    assert [list(s.dim) for s in first.input_param.shape] == [[2, 3], [7]]


def test_inconsistent_inputs_are_errors():
    with pytest.raises(NetConfigError, match=r"n\.prototxt:1: 1 net input\(s\) need 4 input_dim"):
        read_net('input: "a"\ninput_dim: 1 input_dim: 2\n', filename="n.prototxt")
    with pytest.raises(NetConfigError, match="input_shape"):
        read_net('input: "a"\ninput: "b"\ninput_shape { dim: 1 }\n')


def test_batchnorm_three_params_are_dropped():
    net = read_net(shared("caffe-examples", "cifar10", "cifar10_full_sigmoid_train_test_bn.prototxt")).param
    norms = [layer for layer in net.layer if layer.type == "BatchNorm"]
    assert norms and all(len(layer.param) == 0 for layer in norms)


# ---------------------------------------------------------------------------
# Source map


def test_layer_lines_and_field_lines():
    text = """name: "n"
# a comment that says layer { and "quotes
layer {
  name: "a{b}" type: "ReLU"
}

layer { name: "b" type: "ReLU" bottom: "x" }
layer <
  name: "c"
  type: "Convolution"
  convolution_param { num_output: 1 weight_filler { type: 'gaussian' } }
  param { lr_mult: 1 } param { lr_mult: 2 }
  include: { phase: TRAIN }
>
"""
    parsed = read_net(text)
    assert parsed.filename == "<string>"
    assert parsed.layer_lines == [3, 7, 8]
    assert parsed.field_line(0, "type") == 4
    assert parsed.field_line(1, "bottom") == 7
    assert parsed.field_line(2, "convolution_param") == 11
    assert parsed.field_line(2, "param") == 12
    assert parsed.field_line(2, "include") == 13
    assert parsed.field_line(2, "not_written") == 8
    assert parsed.location(2, "type") == "<string>:10: "
    named = read_net(text, filename="n.prototxt")
    assert named.location(2, "type") == "n.prototxt:10: "
    assert named.location(1) == "n.prototxt:7: "


# ---------------------------------------------------------------------------
# Errors


def test_syntax_error_has_file_line_column(tmp_path):
    path = tmp_path / "broken.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type:\n}\n')
    with pytest.raises(PrototxtSyntaxError) as info:
        read_net(path)
    message = str(info.value)
    assert re.match(rf"^{re.escape(str(path))}:5:1: ", message), message
    assert "near '}'" in message


def test_unterminated_block_reports_a_place(tmp_path):
    path = tmp_path / "open.prototxt"
    path.write_text('layer {\n  name: "a"\n')
    with pytest.raises(PrototxtSyntaxError, match=rf"^{re.escape(str(path))}:\d+:\d+: "):
        read_net(path)


def test_unknown_field_names_field_type_line_and_suggestion():
    text = 'name: "n"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n'
    with pytest.raises(PrototxtSyntaxError) as info:
        read_net(text, filename="net.prototxt")
    message = str(info.value)
    assert message.startswith("net.prototxt:4:3: ")
    assert "'tpye'" in message and "caffe.LayerParameter" in message
    assert "did you mean 'type'?" in message


def test_unknown_field_hints():
    with pytest.raises(PrototxtSyntaxError, match="legacy V1 syntax.*lr_mult"):
        parse_net('layer { name: "a" blobs_lr: 1 }')
    with pytest.raises(PrototxtSyntaxError, match="looks like a solver"):
        parse_net('net: "x.prototxt"\nbase_lr: 0.01\n')
    with pytest.raises(PrototxtSyntaxError, match=r"'CONV' is not a value of .*LayerType"):
        parse_net("layers { type: CONV }")


def test_missing_required_field():
    text = 'layer { name: "a" type: "ReLU" }\nlayer {\n  name: "c" type: "Clip" clip_param { min: 0 }\n}\n'
    with pytest.raises(PrototxtSyntaxError, match=r"c\.prototxt:2: missing required field: layer\[1\]"):
        read_net(text, filename="c.prototxt")


def test_missing_file_is_a_data_error(tmp_path):
    missing = tmp_path / "nope.prototxt"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        read_net(missing)
    with pytest.raises(DataError, match="nope"):
        read_solver(str(missing))


def test_binary_file_is_rejected(tmp_path):
    path = tmp_path / "model.caffemodel"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(PrototxtSyntaxError, match="not a text prototxt"):
        read_net(path)


# ---------------------------------------------------------------------------
# Solvers


@pytest.mark.parametrize(("enum_name", "type_name"), sorted(SOLVER_TYPES.items()))
def test_solver_type_upgrade(enum_name, type_name):
    solver = read_solver(f'base_lr: 0.01\nsolver_type: {enum_name}\n').param
    assert solver.type == type_name
    assert not solver.HasField("solver_type")


def test_solver_type_and_type_must_agree():
    ok = read_solver('solver_type: ADAM\ntype: "Adam"\n').param
    assert ok.type == "Adam"
    with pytest.raises(SolverConfigError, match=r"s\.prototxt:2: solver_type: NESTEROV.*\"Adam\""):
        read_solver('type: "Adam"\nsolver_type: NESTEROV\n', filename="s.prototxt")


def test_solver_field_lines_and_inline_net_upgrade():
    text = 'base_lr: 0.1\nnet_param {\n  layers { name: "r" type: RELU }\n}\nmax_iter: 10\n'
    parsed = read_solver(text)
    assert parsed.field_line("net_param") == 2 and parsed.field_line("max_iter") == 5
    assert [layer.type for layer in parsed.param.net_param.layer] == ["ReLU"]


# ---------------------------------------------------------------------------
# upgrade_file / write_text


def test_modern_file_passes_unchanged(tmp_path):
    source = shared("caffe-examples", "mnist", "lenet_train_test.prototxt")
    out = tmp_path / "out.prototxt"
    upgrade_file(source, out)
    original = text_format.Parse(source.read_text(), caffe_pb2.NetParameter())
    assert text_format.Parse(out.read_text(), caffe_pb2.NetParameter()) == original
    assert [p.name for p in tmp_path.iterdir()] == ["out.prototxt"]  # no temp file left behind


def test_upgrade_file_writes_current_net(tmp_path):
    source = shared("legacy", "lenet_v1.prototxt")
    out = tmp_path / "lenet.prototxt"
    message = upgrade_file(source, out)
    text = out.read_text()
    assert "layers {" not in text and "blobs_lr" not in text and 'type: "Convolution"' in text
    assert text_format.Parse(text, caffe_pb2.NetParameter()) == message == read_net(source).param


def test_upgrade_file_detects_solvers_and_works_in_place(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "lenet.prototxt"\nbase_lr: 0.01\nsolver_type: NESTEROV\n')
    message = upgrade_file(path, path)
    assert isinstance(message, caffe_pb2.SolverParameter)
    reread = text_format.Parse(path.read_text(), caffe_pb2.SolverParameter())
    assert reread.type == "Nesterov" and not reread.HasField("solver_type")


def test_write_text_is_atomic_and_keeps_mode(tmp_path):
    path = tmp_path / "n.prototxt"
    path.write_text("old")
    path.chmod(0o640)
    write_text(caffe_pb2.NetParameter(name="n"), path)
    assert path.read_text() == 'name: "n"\n'
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.prototxt"]
    with pytest.raises(DataError, match="missing"):
        write_text(caffe_pb2.NetParameter(), tmp_path / "missing" / "n.prototxt")

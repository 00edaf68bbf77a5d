"""YAML nets and solvers: same NetParameter as the prototxt, anchors/merge keys, errors with
file:line, and lossless prototxt <-> YAML conversion on our models and Caffe's examples."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import pycaffe_lite as pl
from pycaffe_lite.errors import PrototxtSyntaxError
from pycaffe_lite.io.prototxt import parse_net, read_net, read_solver
from pycaffe_lite.io.yaml_format import convert_file, message_to_yaml
from tests.conftest import ROOT, SHARED

SHARED_REASON = f"{SHARED} is absent: the shared Caffe example prototxts are not available here"
EXAMPLES = sorted((SHARED / "caffe-examples").rglob("*.prototxt")) + sorted((SHARED / "legacy").rglob("*.prototxt")) \
    if SHARED.is_dir() else []
OURS = sorted((ROOT / "models").rglob("*.prototxt"))


@pytest.fixture
def caplog(caplog):
    """caplog that also sees the pycaffe_lite logger once the CLI has stopped its propagation."""
    logger = logging.getLogger("pycaffe_lite")
    attach = not logger.propagate  # else caplog's root handler sees the records already
    if attach:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="pycaffe_lite")
    yield caplog
    if attach:
        logger.removeHandler(caplog.handler)


def _reader(path: Path):
    return read_solver if "solver" in path.name else read_net


def _round_trip(path: Path, tmp_path: Path) -> None:
    read = _reader(path)
    yaml_path, back = tmp_path / (path.stem + ".yaml"), tmp_path / (path.stem + ".back.prototxt")
    convert_file(path, yaml_path)
    convert_file(yaml_path, back)
    original = read(path).param
    assert read(yaml_path).param == original
    assert read(back).param == original
    assert read(yaml_path).param.SerializeToString() == original.SerializeToString()


@pytest.mark.parametrize("path", OURS, ids=[f"{p.parent.name}/{p.name}" for p in OURS])
def test_round_trip_our_models(path, tmp_path):
    _round_trip(path, tmp_path)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=f"{p.parent.name}/{p.name}") for p in EXAMPLES]
    or [pytest.param(None, marks=pytest.mark.skip(reason=SHARED_REASON))],
)
def test_round_trip_caffe_examples(path, tmp_path):
    _round_trip(path, tmp_path)


def test_lenet_yaml_reads_like_the_prototxt_and_keeps_layer_lines(tmp_path):
    src = ROOT / "models" / "lenet" / "lenet_train_test.prototxt"
    convert_file(src, tmp_path / "lenet.yaml")
    text = (tmp_path / "lenet.yaml").read_text()
    assert "pooling_param: {pool: MAX, kernel_size: 2, stride: 2}" in text
    assert "param: [{lr_mult: 1}, {lr_mult: 2}]" in text and "bottom: pool1" in text
    parsed = read_net(tmp_path / "lenet.yaml")
    lines = text.splitlines()
    assert len(parsed.layer_lines) == len(parsed.param.layer)
    for layer, line in zip(parsed.param.layer, parsed.layer_lines):
        assert lines[line - 1].strip().startswith((f"- name: {layer.name}", f"- {{name: {layer.name},"))


NET = """\
name: Blocks
x-conv: &conv                      # a reusable block
  type: Convolution
  param: [{lr_mult: 1}, {lr_mult: 2, decay_mult: 0}]
  convolution_param: {num_output: 4, kernel_size: 3, pad: 1, weight_filler: {type: msra}}
layer:
  - {name: data, type: Input, top: data, input_param: {shape: {dim: [2, 3, 8, 8]}}}
  - <<: *conv
    name: conv1
    bottom: data
    top: conv1
  - {<<: *conv, name: conv2, bottom: conv1, top: conv2}
  - name: relu
    type: ReLU
    bottom: conv2
    top: conv2
  - name: pool
    type: Pooling
    bottom: conv2
    top: pool
    pooling_param: {pool: AVE, kernel_size: 2, stride: 2}
    include: {phase: TEST}
    loss_weight: 0
"""

SAME_AS_PROTOTXT = """
name: "Blocks"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 } include { phase: TEST } loss_weight: 0 }
"""


def test_anchors_merge_keys_and_scalars_for_repeated_fields(tmp_path):
    (tmp_path / "net.yaml").write_text(NET)
    parsed = read_net(tmp_path / "net.yaml")
    assert parsed.param == parse_net(SAME_AS_PROTOTXT)
    assert parsed.layer_lines == [7, 8, 12, 13, 17]
    assert parsed.layer_fields[1]["convolution_param"] == 5  # merged from the anchor: its line
    assert parsed.layer_fields[1]["name"] == 9
    net = pl.Net(str(tmp_path / "net.yaml"), phase=pl.TEST)
    assert net.blobs["pool"].data.shape == (2, 4, 4, 4)


def test_solver_yaml_with_a_yaml_net(tmp_path):
    (tmp_path / "net.yaml").write_text(NET.replace("include: {phase: TEST}", "").replace("loss_weight: 0", ""))
    (tmp_path / "solver.yaml").write_text(
        f"net: {tmp_path / 'net.yaml'}\nbase_lr: 1e-3\nlr_policy: step\nstepsize: 10\ngamma: .5\n"
        "max_iter: 1\nsolver_type: NESTEROV\nmomentum: 0.9\ntest_initialization: false\n")
    parsed = read_solver(tmp_path / "solver.yaml")
    assert parsed.param.type == "Nesterov" and not parsed.param.HasField("solver_type")
    assert np.float32(parsed.param.base_lr) == np.float32(1e-3) and parsed.param.gamma == 0.5
    assert parsed.field_line("stepsize") == 4


def test_booleans_are_yaml_1_2(tmp_path):
    f = tmp_path / "n.yaml"
    f.write_text("name: no\nforce_backward: true\nlayer:\n  - {name: on, type: Input, top: yes, "
                 "input_param: {shape: {dim: 1}}}\n")
    net = read_net(f).param
    assert net.name == "no" and net.force_backward is True and net.layer[0].name == "on"
    assert list(net.layer[0].top) == ["yes"]


@pytest.mark.parametrize("body, message", [
    ("layer:\n  - name: a\n    tpye: ReLU\n", r"n.yaml:3: unknown field 'tpye' in caffe.LayerParameter \(did you mean 'type'\?\)"),
    ("layer:\n  - name: a\n    type: Pooling\n    pooling_param: {pool: MAXX}\n",
     r"n.yaml:4: 'MAXX' is not a value of caffe.PoolingParameter.PoolMethod .*did you mean MAX\?"),
    ("layer:\n  - name: a\n    type: [ReLU, Sigmoid]\n", r"n.yaml:3: field 'type' of caffe.LayerParameter takes one value"),
    ("force_backward: 1\n", r"n.yaml:1: field 'force_backward' \(caffe.NetParameter\) is a bool"),
    ("layer:\n  - name: a\n    convolution_param: {num_output: many}\n",
     r"n.yaml:3: field 'num_output' \(caffe.ConvolutionParameter\) is an integer, not 'many'"),
    ("layer:\n  - name: a\n    convolution_param: {num_output: -3}\n", r"n.yaml:3: .*is unsigned, not -3"),
    ("layer:\n  - name: a\n    input_param: 3\n", r"n.yaml:3: caffe.InputParameter is a message"),
    ("name: a\nname: b\n", r"n.yaml:2:1: invalid YAML: key 'name' appears twice"),
    ("layer: [\n", r"n.yaml:2:1: invalid YAML"),
    ("- a\n- b\n", r"n.yaml:1: a YAML net or solver is a mapping of fields"),
    ("layer:\n  - name: p\n    pooling_param: {ceil_mode: true}\n",
     r"n.yaml:3: unknown field 'ceil_mode' .*comes from a Caffe fork.*--lenient"),
])
def test_errors_name_file_and_line(tmp_path, body, message):
    f = tmp_path / "n.yaml"
    f.write_text(body)
    with pytest.raises(PrototxtSyntaxError, match=message):
        read_net(f)


def test_lenient_yaml_drops_unknown_fields_with_a_warning(tmp_path, caplog):
    f = tmp_path / "n.yml"
    f.write_text("layer:\n  - name: p\n    type: Input\n    top: x\n    roi_pooling_param: {pooled_h: 7}\n")
    net = read_net(f, lenient=True).param
    assert net.layer[0].name == "p" and not net.layer[0].HasField("input_param")
    assert "n.yml:5: skipping unknown field 'roi_pooling_param' of caffe.LayerParameter" in caffe_log(caplog)


def caffe_log(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_float_spelling_reads_back_exactly():
    from pycaffe_lite.proto import caffe_pb2

    s = caffe_pb2.SolverParameter(base_lr=1e-8, momentum=0.9, delta=float("inf"), clip_gradients=1e20,
                                  weight_decay=5e-4)
    text = message_to_yaml(s)
    assert "base_lr: 1.0e-08" in text and "momentum: 0.9" in text and "delta: .inf" in text
    import yaml

    assert isinstance(yaml.safe_load(text)["base_lr"], float)  # also a float to YAML 1.1 readers
    f = Path(pytest.importorskip("tempfile").mkdtemp()) / "s.yaml"
    f.write_text(text)
    assert read_solver(f).param == s

"""Net diagrams: DOT text with draw_net's labels and colours, phases, rankdir, and PNG/SVG
drawn without Graphviz (and with it, when a `dot` is on PATH)."""
from __future__ import annotations

import os
import stat
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from pycaffe_lite.draw import build_graph, draw_net_to_file, layer_label, layout, net_to_dot
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.io.prototxt import read_net
from tests.conftest import ROOT

LENET = ROOT / "models" / "lenet" / "lenet_train_test.prototxt"


@pytest.fixture(scope="module")
def lenet():
    return read_net(LENET).param


def test_labels_like_draw_net(lenet):
    by_name = {layer.name: layer for layer in lenet.layer}
    assert layer_label(by_name["conv1"]) == ["conv1", "(Convolution)", "kernel size: 5", "stride: 1", "pad: 0",
                                             "num_output: 20"]
    assert layer_label(by_name["pool1"]) == ["pool1", "(Pooling)", "pool type: MAX", "kernel size: 2",
                                             "stride: 2", "pad: 0"]
    assert layer_label(by_name["ip1"]) == ["ip1", "(InnerProduct)", "num_output: 500"]
    assert layer_label(by_name["relu1"]) == ["relu1", "(ReLU)"]


def test_dot_text(lenet):
    dot = net_to_dot(lenet, rankdir="TB", phase=1)
    assert dot.startswith('digraph "LeNet" {') and "rankdir=TB" in dot
    assert '"conv1_Convolution" [shape=record, style=filled, fillcolor="#FF5050", label="conv1\\n(Convolution)' in dot
    assert '"data_blob" [shape=octagon, style=filled, fillcolor="#E0E0E0", label="data"]' in dot
    assert '"relu1_ReLU" [shape=record, style=filled, fillcolor="#90EE90"' in dot  # in-place neuron
    assert '"data_blob" -> "conv1_Convolution";' in dot and '"ip2_InnerProduct" -> "ip2_blob";' in dot
    # the in-place ReLU rewrites ip1 into a second node, so the graph has no cycle
    assert '"ip1_blob" -> "relu1_ReLU";' in dot and '"relu1_ReLU" -> "ip1_blob_1";' in dot
    assert "batch size: 100" in dot and "batch size: 64" not in dot  # the TEST data layer only


def test_phases(lenet):
    names = lambda g: {n.label[0] for n in g.nodes.values() if n.kind == "layer"}
    assert "accuracy" not in names(build_graph(lenet, phase=0))
    assert "accuracy" in names(build_graph(lenet, phase=1))
    g = build_graph(lenet, phase=None)
    data_layers = [n for n in g.nodes.values() if n.label[1:2] == ["(Data)"]]
    assert len(data_layers) == 2
    # both data layers feed the one "data" blob, as in draw_net
    assert sum(1 for a, b in g.edges if b == "data_blob") == 2


def test_escaping_of_record_characters():
    from pycaffe_lite.io.prototxt import parse_net

    net = parse_net('name: "a\\"b" layer { name: "x{1}|<y>" type: "Input" top: "t" '
                    'input_param { shape { dim: 1 } } }')
    dot = net_to_dot(net)
    assert 'digraph "a\\"b"' in dot and "x\\{1\\}\\|\\<y\\>" in dot


@pytest.mark.parametrize("rankdir", ["LR", "TB", "BT", "RL"])
def test_layout_places_ranks_along_rankdir(lenet, rankdir):
    g = build_graph(lenet, phase=0)
    w, h, lines = layout(g, rankdir)
    a, b = g.nodes["conv1_Convolution"], g.nodes["pool1_Pooling"]
    axis = {"LR": a.x < b.x, "RL": a.x > b.x, "TB": a.y < b.y, "BT": a.y > b.y}
    assert axis[rankdir]
    assert len(lines) == len(g.edges)
    for n in g.nodes.values():  # every node inside the canvas
        assert 0 <= n.x and n.x + n.w <= w + 1e-6 and 0 <= n.y and n.y + n.h <= h + 1e-6
    boxes = [(n.x, n.y, n.x + n.w, n.y + n.h) for n in g.nodes.values()]
    for i, p in enumerate(boxes):  # and no two overlap
        for q in boxes[i + 1:]:
            assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]


def test_png_without_graphviz(lenet, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert draw_net_to_file(lenet, tmp_path / "n.png", "TB", 0) == "pillow"
    img = np.asarray(Image.open(tmp_path / "n.png").convert("RGB"))
    assert img.shape[0] > img.shape[1] > 100  # tall for TB
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert (0xFF, 0x50, 0x50) in colours and (0xE0, 0xE0, 0xE0) in colours  # conv boxes, blobs


def test_svg_without_graphviz(lenet, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert draw_net_to_file(lenet, tmp_path / "n.svg", "LR", None) == "svg"
    root = ET.parse(tmp_path / "n.svg").getroot()
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "(Convolution)" in texts and "num_output: 500" in texts


def test_graphviz_is_used_when_on_path(lenet, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"
    # a stand-in dot: records its arguments and its input
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncat > {tmp_path}/input\n'
                    'while [ "$1" != "-o" ]; do shift; done; echo fake > "$2"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    assert draw_net_to_file(lenet, tmp_path / "n.svg", "BT", 1) == "graphviz"
    assert (tmp_path / "args").read_text().startswith("-Tsvg -o")
    assert "rankdir=BT" in (tmp_path / "input").read_text()
    assert draw_net_to_file(lenet, tmp_path / "m.png", use_graphviz=False) == "pillow"


def test_dot_file_and_errors(lenet, tmp_path):
    assert draw_net_to_file(lenet, tmp_path / "n.dot") == "dot"
    assert (tmp_path / "n.dot").read_text().startswith("digraph")
    with pytest.raises(DataError, match=r"n.gif: unknown diagram format '.gif'; use .png, .svg or .dot"):
        draw_net_to_file(lenet, tmp_path / "n.gif")
    with pytest.raises(NetConfigError, match="rankdir must be one of LR, TB, BT, RL, not 'XY'"):
        net_to_dot(lenet, rankdir="XY")

"""`plite summary`: LeNet-5's counts as the paper prints them, and the counting rules on small nets."""
from __future__ import annotations

import re

import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.layer import TEST, TRAIN
from pycaffe_lite.net import Net
from pycaffe_lite.summary import format_summary, summarize
from tests.conftest import ROOT

LENET5 = ROOT / "models" / "lenet5"

#: LeCun et al. 1998, section II-B: layer -> (neurons, trainable parameters, connections)
PAPER = {
    "C1": ("4,704", "156", "122,304"),
    "S2": ("1,176", "12", "5,880"),
    "C3": ("1,600", "1,516", "151,600"),
    "S4": ("400", "32", "2,000"),
    "C5": ("120", "48,120", "48,120"),
    "F6": ("84", "10,164", "10,164"),
}


def table_rows(text: str) -> dict[str, list[str]]:
    """layer name -> the cells of its line (columns are separated by 2+ spaces)."""
    return {cells[0]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines()) if cells}


def check_lenet5(text: str) -> None:
    rows = table_rows(text)
    for name, (neurons, params, connections) in PAPER.items():
        assert rows[name][-3:] == [neurons, params, connections], f"{name}: {rows[name]}"
    assert rows["output"][-3:] == ["10", "0 (+840 fixed)", "840"]
    # the paper's totals: about 60,000 trainable parameters and 340,908 connections
    assert rows["total"][-2:] == ["60,000", "340,908"]


@pytest.fixture
def in_mnist_workdir(tmp_path, monkeypatch, mnist_small):
    """A folder where data/mnist holds the small LMDBs (the prototxt's paths are relative)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_small, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_lenet5_train_test_prints_the_papers_counts(in_mnist_workdir, capsys, phase):
    assert main(["summary", "--model", str(LENET5 / "lenet5_train_test.prototxt"), "--phase", phase]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"LeNet-5 (phase {phase})")
    check_lenet5(out)
    rows = table_rows(out)
    assert rows["C1"][1:3] == ["Convolution", f"{64 if phase == 'TRAIN' else 100}x6x28x28"]
    assert rows["C1_squash"][2:] == [f"{64 if phase == 'TRAIN' else 100}x6x28x28 (in place)", "-", "-", "-"]
    assert not any(name.endswith("_split") for name in rows)  # the net's own Split layers are hidden


def test_lenet5_deploy_counts():
    net = Net(str(LENET5 / "deploy.prototxt"), phase=TEST)
    check_lenet5(format_summary(summarize(net)))
    by_name = {r.name: r for r in summarize(net)}
    assert by_name["input"].neurons == 32 * 32 and by_name["data"].neurons is None
    assert by_name["C3"].parameters == 60 * 25 + 16  # only the connected filters


def test_counting_rules_on_a_small_net():
    net = Net("""
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
    layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
            convolution_param { num_output: 4 kernel_size: 3 group: 1 } }
    layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "up" type: "Deconvolution" bottom: "p" top: "u" convolution_param { num_output: 2 kernel_size: 2 stride: 2 } }
    layer { name: "ip" type: "InnerProduct" bottom: "u" top: "a" param { name: "w" } param { lr_mult: 0 }
            inner_product_param { num_output: 5 } }
    layer { name: "ip_b" type: "InnerProduct" bottom: "u" top: "b" param { name: "w" } inner_product_param {
            num_output: 5 bias_term: false } }
    layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
    layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "ab" }
    """, phase=TRAIN)
    rows = {r.name: r for r in summarize(net)}
    assert rows["conv"].neurons == 4 * 6 * 6 and rows["conv"].parameters == 4 * 27 + 4
    assert rows["conv"].connections == 36 * (4 * 27 + 4)
    assert rows["pool"].parameters is None and rows["pool"].connections == 4 * 3 * 3 * 4
    # every input pixel spreads through the whole (4, 2, 2, 2) blob; each output adds a bias
    assert rows["up"].connections == 9 * 32 + 2 * 6 * 6 and rows["up"].parameters == 32 + 2
    K = 2 * 6 * 6
    assert rows["ip"].parameters == 5 * K and rows["ip"].fixed_parameters == 5  # lr_mult 0 bias
    assert rows["ip"].connections == 5 * (K + 1)
    assert rows["ip_b"].parameters == 0 and rows["ip_b"].connections == 5 * K  # shared weights counted once
    assert rows["relu"].in_place and rows["relu"].neurons is None and rows["relu"].connections is None
    assert rows["cat"].neurons == 10 and rows["x"].neurons is None
    text = format_summary(summarize(net))
    assert table_rows(text)["ip"][-2:] == [f"{5 * K:,} (+5 fixed)", f"{5 * (K + 1):,}"]


def test_missing_model_file_exits_1(tmp_path, capsys):
    assert main(["summary", "--model", str(tmp_path / "none.prototxt")]) == 1
    assert "none.prototxt" in capsys.readouterr().err


def test_activations_columns_with_and_without_weights(tmp_path, capsys):
    model = tmp_path / "small.prototxt"
    model.write_text("""
    layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 64 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2
            weight_filler { type: "constant" value: 0 } bias_filler { type: "constant" value: -1 } } }
    layer { name: "relu" type: "ReLU" bottom: "y" top: "y" }
    """)
    assert main(["summary", "--model", str(model), "--activations"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["layer"][-2:] == ["act mean", "act std"]
    assert rows["ip"][-2:] == ["-1", "0"] and rows["relu"][-2:] == ["0", "0"]  # each layer's own output
    x_mean, x_std = float(rows["x"][-2]), float(rows["x"][-1])  # the Input gets N(0, 1) draws
    assert abs(x_mean) < 0.3 and 0.8 < x_std < 1.2
    # weights: zero weights, biases 1 and 3 -> every sample's y is (1, 3): mean 2, std 1
    net = Net(str(model), phase=TEST)
    net.params["ip"][1].data[...] = [1, 3]
    net.save(str(tmp_path / "w.caffemodel"))
    assert main(["summary", "--model", str(model), "--activations", "--weights", str(tmp_path / "w.caffemodel")]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["ip"][-2:] == ["2", "1"] and rows["relu"][-2:] == ["2", "1"]
    assert main(["summary", "--model", str(model)]) == 0  # without the flag: no extra columns
    assert table_rows(capsys.readouterr().out)["layer"][-1] == "connections"

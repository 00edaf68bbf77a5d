"""Training logs -> CSV (Caffe's glog logs and ours) and plots."""
from __future__ import annotations

import csv
import io
import logging
import math
import sys

import pytest

from pycaffe_lite.errors import DataError, PliteError
from pycaffe_lite.log_parse import parse_log, plot_log, save_csv


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() / setup_logging configure the pycaffe_lite logger: put it back for other tests."""
    logger = logging.getLogger("pycaffe_lite")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


CAFFE_LOG = """\
Log file created at: 2016/12/31 23:59:58
Running on machine: box
Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg
I1231 23:59:58.100000  4242 caffe.cpp:218] Using GPUs 0
I1231 23:59:59.000000  4242 solver.cpp:280] Solving LeNet
I1231 23:59:59.000000  4242 solver.cpp:281] Learning Rate Policy: inv
I1231 23:59:59.500000  4242 solver.cpp:338] Iteration 0, Testing net (#0)
I1231 23:59:59.600000  4242 solver.cpp:405]     Test net output #0: accuracy = 0.0865
I1231 23:59:59.600000  4242 solver.cpp:405]     Test net output #1: loss = 2.3679 (* 1 = 2.3679 loss)
I1231 23:59:59.700000  4242 solver.cpp:218] Iteration 0 (0 iter/s, 0.7s/100 iters), loss = 2.39
I1231 23:59:59.700000  4242 solver.cpp:237]     Train net output #0: loss = 2.39 (* 1 = 2.39 loss)
I1231 23:59:59.700000  4242 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I0101 00:00:01.700000  4242 solver.cpp:218] Iteration 100 (50 iter/s, 2s/100 iters), loss = 0.21
I0101 00:00:01.700000  4242 solver.cpp:237]     Train net output #0: loss = 0.21 (* 1 = 0.21 loss)
I0101 00:00:01.700000  4242 sgd_solver.cpp:105] Iteration 100, lr = 0.00992565
I0101 00:00:03.000000  4242 solver.cpp:338] Iteration 200, Testing net (#0)
I0101 00:00:03.100000  4242 solver.cpp:405]     Test net output #0: accuracy = 0.95
I0101 00:00:03.100000  4242 solver.cpp:405]     Test net output #1: loss = 0.15 (* 1 = 0.15 loss)
I0101 00:00:03.700000  4242 solver.cpp:218] Iteration 200 (50 iter/s, 2s/100 iters), loss = 0.11
I0101 00:00:03.700000  4242 solver.cpp:237]     Train net output #0: loss = 0.11 (* 1 = 0.11 loss)
I0101 00:00:03.700000  4242 sgd_solver.cpp:105] Iteration 200, lr = 0.00985258
"""


@pytest.fixture
def caffe_log(tmp_path):
    path = tmp_path / "caffe.log"
    path.write_text(CAFFE_LOG)
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_caffe_glog_log(caffe_log, tmp_path):
    parsed = parse_log(caffe_log)
    assert [r["NumIters"] for r in parsed.train] == [0, 100, 200]
    # seconds from the "Solving" line, across the new year
    assert [r["Seconds"] for r in parsed.train] == pytest.approx([0.7, 2.7, 4.7])
    assert [r["LearningRate"] for r in parsed.train] == [0.01, 0.00992565, 0.00985258]
    assert [r["loss"] for r in parsed.train] == [2.39, 0.21, 0.11]
    assert parsed.test_names == ["accuracy", "loss"]
    assert parsed.test[1] == {"NumIters": 200, "Seconds": pytest.approx(4.1), "LearningRate": 0.00985258,
                              "accuracy": 0.95, "loss": 0.15}
    train_csv, test_csv = save_csv(parsed, caffe_log, tmp_path / "out")
    assert train_csv.name == "caffe.log.train.csv" and test_csv.name == "caffe.log.test.csv"
    assert read_csv(train_csv) == [["NumIters", "Seconds", "LearningRate", "loss"], ["0", "0.7", "0.01", "2.39"],
                                   ["100", "2.7", "0.00992565", "0.21"], ["200", "4.7", "0.00985258", "0.11"]]
    assert read_csv(test_csv)[0] == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert save_csv(parsed, caffe_log)[0].parent == caffe_log.parent  # default: beside the log


def test_lr_before_any_is_the_first_one_and_missing_values_are_empty(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(
        "I0105 10:00:00.000000 1 s.cpp:1] Solving N\n"
        "I0105 10:00:01.000000 1 s.cpp:1] Iteration 0, Testing net (#0)\n"
        "I0105 10:00:01.000000 1 s.cpp:1]     Test net output #0: acc = 0.5\n"
        "I0105 10:00:02.000000 1 s.cpp:1] Iteration 10, Testing net (#0)\n"
        "I0105 10:00:02.000000 1 s.cpp:1]     Test net output #0: top5 = nan\n"
        "I0105 10:00:03.000000 1 s.cpp:1] Iteration 10, lr = 0.5\n")
    parsed = parse_log(log)
    assert [r["LearningRate"] for r in parsed.test] == [0.5, 0.5]
    assert math.isnan(parsed.test[1]["top5"])
    _, test_csv = save_csv(parsed, log)
    assert read_csv(test_csv)[1:] == [["0", "1.0", "0.5", "0.5", ""], ["10", "2.0", "0.5", "", "nan"]]


def test_our_own_log(tmp_path):
    from pycaffe_lite.log import setup_logging
    from pycaffe_lite.solvers import get_solver

    solver_text = """
    net_param {
      name: "tiny"
      layer { name: "data" type: "DummyData" top: "x" top: "y"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                           data_filler { type: "gaussian" } data_filler { type: "gaussian" } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
      layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "y" top: "loss" }
    }
    base_lr: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 10 display: 5 max_iter: 20
    test_iter: 2 test_interval: 10 random_seed: 1
    """
    stream = io.StringIO()
    setup_logging(logging.INFO, stream=stream)
    get_solver(solver_text).solve()
    log = tmp_path / "plite.log"
    log.write_text(stream.getvalue())
    parsed = parse_log(log)
    # the final "Iteration 20, loss = ..." line prints no net outputs (as in Caffe): no row
    assert [r["NumIters"] for r in parsed.train] == [0, 5, 10, 15]
    assert [r["NumIters"] for r in parsed.test] == [0, 10, 20]
    assert parsed.train_names == ["loss"] and parsed.test_names == ["loss"]
    assert [r["LearningRate"] for r in parsed.train[:4]] == pytest.approx([0.01, 0.01, 0.005, 0.005])
    assert all(r["Seconds"] >= 0 for r in parsed.train)


def test_not_a_log(tmp_path):
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"x.txt: no 'Iteration N' lines"):
        parse_log(tmp_path / "x.txt")
    with pytest.raises(DataError, match="no such log file"):
        parse_log(tmp_path / "none.log")


def test_plot(caffe_log, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (the optional 'plot' extra)")
    from PIL import Image

    out = plot_log(caffe_log, tmp_path / "p.png", x="seconds", y=["loss", "lr"])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 600
    plot_log(caffe_log, tmp_path / "q.png")  # every output and lr
    with pytest.raises(DataError, match=r"prints no output named 'top5'; it has: loss, accuracy"):
        plot_log(caffe_log, tmp_path / "r.png", y=["top5"])
    with pytest.raises(DataError, match="--x must be 'iters' or 'seconds'"):
        plot_log(caffe_log, tmp_path / "r.png", x="epochs")


def test_plot_without_matplotlib_names_the_extra(caffe_log, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(PliteError, match=r"plotting needs matplotlib.*pip install 'pycaffe-lite\[plot\]'"):
        plot_log(caffe_log, tmp_path / "p.png")

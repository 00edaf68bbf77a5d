"""`plite test --report`: every measure on confusion tables worked by hand, the probability-based
measures and rejection on four hand-made samples, blob detection, errors, and the CLI on a tiny net."""
import math

import numpy as np
import pytest

from pycaffe_lite.cli import main
from pycaffe_lite.errors import DataError, NetConfigError
from pycaffe_lite.layer import TEST
from pycaffe_lite.net import Net
from pycaffe_lite.report import (
    ReportCollector,
    confusion_matrix,
    cross_entropy,
    evaluate,
    find_blobs,
    information_measures,
    kl_divergence,
    per_class,
    rejection_rates,
)


def test_2x2_table_by_hand():
    # M = [[3, 1], [1, 3]], N = 8: P(t,y) = 3/8, 1/8, 1/8, 3/8; P(t) = P(y) = (1/2, 1/2).
    # H(T) = H(Y) = 1 bit.
    # H(T,Y) = -2 (3/8) log2(3/8) - 2 (1/8) log2(1/8) = (3/4)(3 - log2 3) + 3/4 = 1.811278
    # I(T;Y) = 1 + 1 - 1.811278 = 0.188722 = 1 - H_b(1/4);  NMI = I / sqrt(1 * 1) = I;  U = I / 1 = I
    # H(Y|T) = H(T|Y) = 1.811278 - 1 = 0.811278 (= H_b(1/4), the binary entropy of the error rate)
    # precision = recall = F1 = 3/4 for both classes
    m = np.array([[3, 1], [1, 3]])
    info = information_measures(m)
    h_ty = 0.75 * (3 - math.log2(3)) + 0.75
    assert info["H(T,Y)"] == pytest.approx(h_ty) == pytest.approx(1.811278, abs=1e-6)
    assert info["H(T)"] == info["H(Y)"] == pytest.approx(1.0)
    assert info["I(T;Y)"] == pytest.approx(2 - h_ty) == pytest.approx(0.188722, abs=1e-6)
    assert info["NMI"] == info["U"] == pytest.approx(info["I(T;Y)"])
    assert info["H(Y|T)"] == info["H(T|Y)"] == pytest.approx(0.811278, abs=1e-6)
    p, r, f = per_class(m)
    np.testing.assert_allclose([p, r, f], 0.75)


def test_3x3_table_by_hand():
    # M = [[2, 0, 0],     P(t,y) = 1/4, 1/8, 1/8, 1/2 on the non-zero cells (N = 8)
    #      [0, 1, 1],     H(T,Y) = 1/4*2 + 1/8*3 + 1/8*3 + 1/2*1 = 1.75
    #      [0, 0, 4]]     P(t) = (1/4, 1/4, 1/2): H(T) = 0.5 + 0.5 + 0.5 = 1.5
    # P(y) = (2, 1, 5)/8: H(Y) = 1/4*2 + 1/8*3 + 5/8*log2(8/5) = 0.875 + 0.625*(3 - log2 5) = 1.298795
    # I(T;Y) = 1.5 + 1.298795 - 1.75 = 1.048795
    # H(Y|T) = 1.75 - 1.5 = 0.25;  H(T|Y) = 1.75 - 1.298795 = 0.451205
    # NMI = 1.048795 / sqrt(1.5 * 1.298795) = 0.751406;  U = 1.048795 / 1.5 = 0.699197
    # precision = (2/2, 1/1, 4/5) = (1, 1, 0.8); recall = (2/2, 1/2, 4/4) = (1, 0.5, 1)
    # F1 = (1, 2*0.5/1.5, 2*0.8/1.8) = (1, 2/3, 8/9); accuracy 7/8
    m = np.array([[2, 0, 0], [0, 1, 1], [0, 0, 4]])
    info = information_measures(m)
    h_y = 0.875 + 0.625 * (3 - math.log2(5))
    assert info["H(T,Y)"] == pytest.approx(1.75)
    assert info["H(T)"] == pytest.approx(1.5)
    assert info["H(Y)"] == pytest.approx(h_y) == pytest.approx(1.298795, abs=1e-6)
    assert info["I(T;Y)"] == pytest.approx(1.5 + h_y - 1.75) == pytest.approx(1.048795, abs=1e-6)
    assert info["H(Y|T)"] == pytest.approx(0.25)
    assert info["H(T|Y)"] == pytest.approx(1.75 - h_y) == pytest.approx(0.451205, abs=1e-6)
    assert info["NMI"] == pytest.approx(0.751406, abs=1e-6)
    assert info["U"] == pytest.approx(0.699197, abs=1e-6)
    p, r, f = per_class(m)
    np.testing.assert_allclose(p, [1, 1, 0.8])
    np.testing.assert_allclose(r, [1, 0.5, 1])
    np.testing.assert_allclose(f, [1, 2 / 3, 8 / 9])
    # the same table from samples
    targets = [0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 1, 2, 2, 2, 2, 2]
    np.testing.assert_array_equal(confusion_matrix(targets, preds, 3), m)


def test_degenerate_tables():
    # one class only: every entropy 0, NMI and U defined as 0; a never-predicted class has NaN precision
    info = information_measures(np.array([[5, 0], [0, 0]]))
    assert all(v == 0 for v in info.values())
    p, r, f = per_class(np.array([[2, 0], [3, 0]]))
    assert np.isnan(p[1]) and r[1] == 0 and f[1] == 0 and p[0] == pytest.approx(0.4)
    with pytest.raises(DataError, match="empty"):
        information_measures(np.zeros((2, 2)))


# four samples, two classes:      p(0)   p(1)  target  -log2 p(target)   top p   prediction
PROBS = np.array([[0.5, 0.5],    # 0.5    0.5    0       1                0.5     0 (tie: first)
                  [0.75, 0.25],  # 0.75   0.25   1       2                0.75    0 (wrong)
                  [0.125, 0.875],  # ...  0.875  1       -log2(7/8)       0.875   1 (right)
                  [1.0, 0.0]])   # 1      0      0       0                1       0 (right)
TARGETS = np.array([0, 1, 1, 0])


def test_cross_entropy_kl_and_rejection_by_hand():
    # CE = (1 + 2 + (3 - log2 7) + 0) / 4 = 0.798158 bits
    assert cross_entropy(PROBS, TARGETS) == pytest.approx((3 + 3 - math.log2(7)) / 4)
    # P_T = (1/2, 1/2); mean prediction Q = (2.375/4, 1.625/4) = (19/32, 13/32)
    # KL = 1/2 log2((1/2)/(19/32)) + 1/2 log2((1/2)/(13/32)) = 1/2 (log2(16/19) + log2(16/13)) = 0.025816
    kl = 0.5 * (math.log2(16 / 19) + math.log2(16 / 13))
    assert kl_divergence(PROBS, TARGETS) == pytest.approx(kl) == pytest.approx(0.025816, abs=1e-6)
    # threshold 0.6 rejects sample 1 (top 0.5); sample 2 is accepted and wrong; 3 and 4 accepted and right
    r = rejection_rates(PROBS, TARGETS, 0.6)
    assert (r["rejection"], r["error"], r["correct"], r["accepted_accuracy"]) == (0.25, 0.25, 0.5, pytest.approx(2 / 3))
    r = rejection_rates(PROBS, TARGETS, 0.0)  # nothing rejected: error + correct = 1 - accuracy + accuracy
    assert (r["rejection"], r["error"], r["correct"]) == (0, 0.25, 0.75)
    r = rejection_rates(PROBS, TARGETS, 1.01)
    assert r["rejection"] == 1 and math.isnan(r["accepted_accuracy"])
    rep = evaluate(PROBS, TARGETS, [0.6, 0.9])
    assert rep.accuracy == 0.75 and [x["threshold"] for x in rep.rejection] == [0.6, 0.9]
    np.testing.assert_array_equal(rep.confusion, [[2, 0], [1, 1]])
    text = rep.format()
    assert "cross-entropy = 0.7982 bits/sample" in text and "H(T,Y) = " in text
    assert "      0.6     0.2500  0.2500   0.5000" in text


NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 2 } shape { dim: 4 }
                     data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "constant" value: 0 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }
"""


def test_blob_detection_and_errors(tmp_path):
    net = Net(NET, phase=TEST)
    assert find_blobs(net) == ("ip", "label", None)
    c = ReportCollector(net)
    assert (c.scores, c.softmax_producer) == ("ip", False)
    assert ReportCollector(net, scores="prob").softmax_producer
    two = NET + 'layer { name: "acc2" type: "Accuracy" bottom: "prob" bottom: "label" top: "a2" }'
    with pytest.raises(NetConfigError, match=r"the Accuracy layers disagree .*'acc2' reads \('prob', 'label'\)\); "
                       "choose with --scores BLOB --labels BLOB"):
        find_blobs(Net(two, phase=TEST))
    bare = NET.split('layer { name: "acc"')[0]
    with pytest.raises(NetConfigError, match=r"no Accuracy or SoftmaxWithLoss layer .*give --scores BLOB --labels "
                       r"BLOB \(blobs: data, label, ip, prob\)"):
        ReportCollector(Net(bare, phase=TEST))
    with pytest.raises(NetConfigError, match=r"no blob 'logits' \(--scores\)"):
        ReportCollector(net, scores="logits")
    bad = Net(bare.replace("value: 2", "value: 7"), phase=TEST)
    c = ReportCollector(bad, scores="ip", labels="label")
    bad.forward()
    with pytest.raises(DataError, match=r"labels blob 'label' holds label 7, outside 0..2 \(the 3 classes of 'ip'\)"):
        c.add()


def test_cli_report_on_a_tiny_net(tmp_path, capsys):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET)
    assert main(["test", "--model", str(model), "--iterations", "2", "--report",
                 "--reject-threshold", "0.3,0.5"]) == 0
    out = capsys.readouterr().out
    # zero weights: every logit is 0 -> softmax 1/3 each -> argmax class 0; every label is 2
    assert "Report over 8 samples (scores: 'ip', labels: 'label')" in out
    assert "accuracy = 0.0000" in out
    assert "    2   8   0   0" in out  # row of target 2: all predicted 0
    assert f"cross-entropy = {math.log2(3):.4f} bits/sample" in out
    assert f"KL(P_T || mean prediction) = {math.log2(3):.4f}" in out  # P_T = (0, 0, 1), Q = (1/3, 1/3, 1/3)
    assert "H(T)   = 0.0000" in out
    assert "        0.3     0.0000  1.0000   0.0000" in out  # 1/3 >= 0.3: all accepted, all wrong
    assert "        0.5     1.0000  0.0000   0.0000" in out  # all rejected
    assert main(["test", "--model", str(model), "--iterations", "1", "--scores", "prob"]) == 0  # implies --report
    assert "(scores: 'prob', labels: 'label')" in capsys.readouterr().out
    assert main(["test", "--model", str(model), "--iterations", "1", "--reject-threshold", "0.5", "1.5"]) == 1
    assert "--reject-threshold 1.5 is not a probability: give values in [0, 1]" in capsys.readouterr().err
    assert main(["test", "--model", str(model), "--iterations", "1", "--reject-threshold", "0.5,x"]) == 1
    assert "--reject-threshold 'x' is not a number" in capsys.readouterr().err

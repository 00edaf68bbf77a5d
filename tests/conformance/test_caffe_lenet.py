"""A LeNet trained by BVLC Caffe reproduces Caffe's own test figures here, batch by batch."""

import numpy as np
import pytest

from pycaffe_lite import TEST
from pycaffe_lite.net import Net
from tests.conftest import ROOT, shared_dir

# What `caffe test -iterations 10` printed for this very file (../shared/fixtures/caffe-lenet/README.md)
CAFFE_ACCURACY = [0.97, 0.98, 0.98, 0.97, 0.94, 0.98, 0.97, 1.00, 0.97, 0.96]
CAFFE_LOSS = [0.122693, 0.0494279, 0.0930728, 0.0987566, 0.220553, 0.0700545, 0.132278, 0.0165537,
              0.11933, 0.242303]


@pytest.fixture(scope="module")
def caffe_net(tmp_path_factory):
    from pycaffe_lite.data.mnist import prepare_mnist

    model = shared_dir("fixtures", "caffe-lenet") / "lenet_iter_2000.caffemodel"
    work = tmp_path_factory.mktemp("lenet")
    prepare_mnist(work / "data" / "mnist")
    text = (ROOT / "models" / "lenet" / "lenet_train_test.prototxt").read_text()
    text = text.replace('"data/mnist/', f'"{work}/data/mnist/')
    return Net(text, phase=TEST, weights=str(model)), model, work


def test_caffe_trained_lenet_gives_caffes_figures(caffe_net):
    net, _, _ = caffe_net
    acc, loss = [], []
    for _ in range(10):
        net.forward_loss()
        acc.append(float(net.blobs["accuracy"].data))
        loss.append(float(net.blobs["loss"].data))
    np.testing.assert_allclose(acc, CAFFE_ACCURACY, atol=1e-6)
    np.testing.assert_allclose(loss, CAFFE_LOSS, atol=1e-5)
    assert np.mean(acc) == pytest.approx(0.972)
    assert np.mean(loss) == pytest.approx(0.116502, abs=1e-5)


def test_caffemodel_written_here_has_caffes_structure_and_reads_back(caffe_net, tmp_path):
    from pycaffe_lite.io.caffemodel import read_caffemodel

    net, model, _ = caffe_net
    out = tmp_path / "copy.caffemodel"
    net.save(out)
    theirs, ours = read_caffemodel(model), read_caffemodel(out)
    theirs_blobs = {lp.name: [tuple(b.shape.dim) for b in lp.blobs] for lp in theirs.layer if lp.blobs}
    ours_blobs = {lp.name: [tuple(b.shape.dim) for b in lp.blobs] for lp in ours.layer if lp.blobs}
    assert ours_blobs == theirs_blobs
    for a, b in zip([lp for lp in theirs.layer if lp.blobs], [lp for lp in ours.layer if lp.blobs]):
        for x, y in zip(a.blobs, b.blobs):
            assert list(x.data) == list(y.data)
    again = Net(str(ROOT / "models" / "lenet" / "lenet_deploy.prototxt"), phase=TEST, weights=str(out))
    np.testing.assert_array_equal(again.params["conv1"][0].data, net.params["conv1"][0].data)


def test_caffemodel_written_here_equals_caffes_but_for_the_numbers(caffe_net, tmp_path):
    """Same layers, same fields, same blob shapes as the file BVLC Caffe wrote (TRAIN net)."""
    from pycaffe_lite import TRAIN
    from pycaffe_lite.io.caffemodel import read_caffemodel

    _, model, work = caffe_net
    text = (ROOT / "models" / "lenet" / "lenet_train_test.prototxt").read_text()
    text = text.replace('"data/mnist/', f'"{work}/data/mnist/')
    out = tmp_path / "ours.caffemodel"
    Net(text, phase=TRAIN).save(out)
    theirs, ours = read_caffemodel(model), read_caffemodel(out)
    for m in (theirs, ours):
        for lp in m.layer:
            for b in lp.blobs:
                b.ClearField("data")
            if lp.HasField("data_param"):
                lp.data_param.source = "mnist_train_lmdb"
    assert [lp.SerializeToString() for lp in ours.layer] == [lp.SerializeToString() for lp in theirs.layer]

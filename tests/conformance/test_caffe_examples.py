"""BVLC Caffe's own MNIST example files train here unchanged (data paths aside).

Each solver of ../shared/caffe-examples/mnist runs a few iterations on a small LMDB laid
out where the examples expect it (``examples/mnist/*_lmdb`` under a temporary folder).
"""
import math
import os
import shutil

import numpy as np
import pytest

from pycaffe_lite.io.prototxt import upgrade_file
from pycaffe_lite.solvers import get_solver
from tests.conftest import shared_dir

LENET_SOLVERS = [
    "lenet_solver.prototxt",
    "lenet_solver_adam.prototxt",
    "lenet_solver_rmsprop.prototxt",
    "lenet_adadelta_solver.prototxt",
    "lenet_multistep_solver.prototxt",
]
AUTOENCODER_SOLVERS = ["mnist_autoencoder_solver_nesterov.prototxt", "mnist_autoencoder_solver_adagrad.prototxt"]


@pytest.fixture(scope="module")
def caffe_tree(tmp_path_factory):
    """A folder laid out like Caffe's source tree: examples/mnist/{prototxts, LMDBs}."""
    from pycaffe_lite.data.mnist import prepare_mnist

    src = shared_dir("caffe-examples", "mnist")
    root = tmp_path_factory.mktemp("caffe")
    dst = root / "examples" / "mnist"
    shutil.copytree(src, dst)
    prepare_mnist(dst, limit=400)
    return root


def run(root, solver_file, iters, chdir):
    chdir(root)
    solver = get_solver(f"examples/mnist/{solver_file}")
    solver.param.test_initialization = False  # the examples test on 10,000+ digits; we test training
    losses = []
    for _ in range(iters):
        solver.step(1)
        losses.append(solver.smoothed_loss)
    return solver, losses


@pytest.mark.slow
@pytest.mark.parametrize("solver_file", LENET_SOLVERS + AUTOENCODER_SOLVERS)
def test_caffe_example_solver_trains(caffe_tree, solver_file, monkeypatch):
    iters = 25
    solver, losses = run(caffe_tree, solver_file, iters, monkeypatch.chdir)
    assert solver.iter == iters
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


@pytest.mark.slow
def test_legacy_v1_lenet_trains_exactly_like_its_modern_form(caffe_tree, monkeypatch, tmp_path):
    legacy = shared_dir("legacy") / "lenet_v1.prototxt"
    monkeypatch.chdir(caffe_tree / "examples" / "mnist")  # the V1 file names mnist_*_lmdb relative to here
    modern = tmp_path / "lenet_modern.prototxt"
    upgrade_file(str(legacy), str(modern))
    assert "layers {" not in modern.read_text() and "CONVOLUTION" not in modern.read_text()
    results = []
    for net_file in (str(legacy), str(modern)):
        solver_text = (f'net: "{net_file}" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" '
                       'gamma: 0.0001 power: 0.75 max_iter: 10 display: 0 random_seed: 7 '
                       'test_iter: 1 test_interval: 1000 snapshot_after_train: false')
        solver = get_solver(solver_text)
        solver.step(10)
        results.append([b.data.copy() for b in solver.net.learnable_params])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    assert os.path.exists(modern)

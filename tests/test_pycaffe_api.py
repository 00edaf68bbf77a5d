"""The pycaffe-style API end to end: the package's names, Net's constructor forms, forward with
named inputs, backward returning input diffs, forward_all, the blobs/params/layers views, and
solvers driven from Python (step, solve, snapshot, restore, test nets)."""
import subprocess
import sys

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import NetConfigError, PliteError, ShapeError

NET = """
name: "api"
force_backward: true
layer { name: "input" type: "Input" top: "x" top: "y"
  input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "out" top: "out" include { stage: "relu" } }
layer { name: "twice" type: "Power" bottom: "out" top: "twice" power_param { scale: 2 } include { phase: TEST } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" include { phase: TRAIN } }
"""


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return str(path)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# --- the package -------------------------------------------------------------------------
def test_import_stays_cheap_and_names_load_on_first_use():
    code = ("import sys, pycaffe_lite as p\n"
            "assert not any(m in sys.modules for m in ('pycaffe_lite.net', 'pycaffe_lite.solvers', "
            "'pycaffe_lite.net_spec', 'pycaffe_lite.io.transformer', 'numba')), sorted(sys.modules)\n"
            "for n in p.__all__: getattr(p, n)\n"
            "assert p.L is p.net_spec.layers and p.P is p.net_spec.params\n"
            "assert p.io.Transformer is p.io.transformer.Transformer\n"
            "from pycaffe_lite.io import prototxt, caffemodel\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_solver_classes_and_modes():
    from pycaffe_lite.solvers import AdamSolver, SGDSolver

    assert caffe.SGDSolver is SGDSolver and caffe.AdamSolver is AdamSolver
    assert {caffe.NesterovSolver.type, caffe.AdaGradSolver.type, caffe.RMSPropSolver.type,
            caffe.AdaDeltaSolver.type} == {"Nesterov", "AdaGrad", "RMSProp", "AdaDelta"}
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    caffe.set_mode_cpu()
    with pytest.raises(PliteError, match="set_mode_gpu: pycaffe_lite runs on the CPU only"):
        caffe.set_mode_gpu()
    with pytest.raises(PliteError, match=r"set_device\(0\): pycaffe_lite runs on the CPU only"):
        caffe.set_device(0)
    assert "InnerProduct" in caffe.layer_type_list() and "Python" in caffe.layer_type_list()


def test_set_random_seed_repeats_the_fillers(net_file):
    caffe.set_random_seed(5)
    a = caffe.Net(net_file, caffe.TRAIN)
    caffe.set_random_seed(5)
    b = caffe.Net(net_file, caffe.TRAIN)
    np.testing.assert_array_equal(a.params["ip"][0].data, b.params["ip"][0].data)


# --- constructing ------------------------------------------------------------------------
def test_constructor_forms(net_file, tmp_path):
    train = caffe.Net(net_file, caffe.TRAIN)
    weights = str(tmp_path / "w.caffemodel")
    train.save(weights)
    expected = train.params["ip"][0].data
    for net in (caffe.Net(net_file, caffe.TEST, weights=weights),      # current pycaffe
                caffe.Net(net_file, weights, caffe.TEST),              # pycaffe's old form
                caffe.Net(net_file, phase=caffe.TEST, weights=weights)):
        assert net.phase == caffe.TEST and "twice" in net.blobs and "loss" not in net.blobs
        np.testing.assert_array_equal(net.params["ip"][0].data, expected)
    staged = caffe.Net(net_file, caffe.TRAIN, level=0, stages=["relu"])
    assert "relu" in staged.layer_dict and "relu" not in train.layer_dict
    with pytest.raises(NetConfigError, match="either as the second argument"):
        caffe.Net(net_file, weights, caffe.TEST, weights=weights)
    with pytest.raises(NetConfigError, match=r"phase must be pycaffe_lite.TRAIN \(0\) or pycaffe_lite.TEST \(1\), "
                                             r"not 7"):
        caffe.Net(net_file, 7)


# --- forward / backward ------------------------------------------------------------------
def test_forward_with_named_inputs_and_layer_ranges(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    W, b = (p.data.astype(np.float64) for p in net.params["ip"])
    x = rand(4, 3)
    out = net.forward(x=x)
    assert set(out) == {"y", "twice"}  # the outputs (y is an input nobody reads)
    np.testing.assert_allclose(out["twice"], 2 * (x @ W.T + b), rtol=1e-5)
    assert out["twice"] is net.blobs["twice"].data  # pycaffe returns the blobs' own arrays
    # end by layer name returns that layer's tops; blobs= adds more
    out = net.forward(end="ip", blobs=["x"], x=2 * x)
    assert set(out) == {"out", "x"}
    np.testing.assert_allclose(out["out"], 2 * x @ W.T + b, rtol=1e-5)
    # start by layer name runs from there on what the blobs hold
    net.blobs["out"].data[...] = 1
    np.testing.assert_array_equal(net.forward(start="twice")["twice"], 2)
    with pytest.raises(NetConfigError, match=r"net 'api' has no layer named 'nope' \(layers: input, ip, twice\)"):
        net.forward(end="nope")
    with pytest.raises(NetConfigError, match=r"no blob named 'z' to set the data of \(inputs: x, y; outputs: "):
        net.forward(z=x)
    with pytest.raises(ShapeError, match=r"input 'x' has shape \(2, 3\) but the net expects \(4, 3\)"):
        net.forward(x=x[:2])


def test_backward_returns_input_diffs(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    W = net.params["ip"][0].data.astype(np.float64)
    net.forward(x=rand(4, 3))
    g = rand(4, 2, seed=1)
    diffs = net.backward(twice=g)
    assert set(diffs) == {"x", "y"}
    np.testing.assert_allclose(diffs["x"], 2 * g @ W, rtol=1e-5)
    # start/end by layer name; diffs= adds blobs; the returned arrays are the blobs' diffs
    diffs = net.backward(start="ip", end="ip", diffs=["out"], twice=g)
    assert set(diffs) == {"x", "out"} and diffs["x"] is net.blobs["x"].diff
    np.testing.assert_allclose(diffs["x"], net.blobs["out"].diff @ W, rtol=1e-5)
    with pytest.raises(ShapeError, match=r"diff for 'twice' has shape \(1, 2\) but the net expects \(4, 2\)"):
        net.backward(twice=g[:1])


def test_backward_of_a_loss_matches_central_differences(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    x, y = rand(4, 3), rand(4, 2, seed=2)
    net.forward(x=x, y=y)
    grads = {k: v.copy() for k, v in net.backward().items()}  # loss layers seed their own top diff
    for name, value in (("x", x), ("y", y)):
        numeric = np.zeros(value.shape)
        for idx in np.ndindex(value.shape):
            for sign in (1, -1):
                v = value.copy()
                v[idx] += sign * 1e-2
                numeric[idx] += sign * float(net.forward(**{name: v})["loss"]) / 2e-2
            net.forward(x=x, y=y)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-2, atol=1e-3)


def test_forward_all_batches_pads_and_concatenates(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    W, b = (p.data.astype(np.float64) for p in net.params["ip"])
    x = rand(10, 3)
    out = net.forward_all(x=x)  # batch 4: 4 + 4 + 2 (padded with zeros, padding dropped)
    assert out["twice"].shape == (10, 2) and out["y"].shape == (10, 2)
    np.testing.assert_allclose(out["twice"], 2 * (x @ W.T + b), rtol=1e-5)
    outs, diffs = net.forward_backward_all(x=x, twice=np.ones((10, 2), np.float32))
    np.testing.assert_allclose(outs["twice"], out["twice"])
    np.testing.assert_allclose(diffs["x"], np.tile(2 * W.sum(0), (10, 1)), rtol=1e-5)
    assert net.forward_all()["twice"].shape == (4, 2)
    outs, diffs = net.forward_backward_all()  # one pass on what the blobs hold
    assert outs["twice"].shape == (4, 2) and diffs["x"].shape == (4, 3)
    train = caffe.Net(NET, caffe.TRAIN)
    losses = train.forward_all(x=x, y=rand(10, 2))["loss"]  # a scalar output: one value per batch
    assert losses.shape == (3,) and np.all(losses > 0)
    with pytest.raises(ShapeError, match="differ in length"):
        net.forward_all(x=x, y=rand(3, 2))


def test_reshape_inputs_then_the_net(net_file):
    net = caffe.Net(net_file, caffe.TEST)
    net.blobs["x"].reshape(7, 3)
    net.reshape()
    assert net.blobs["twice"].shape == (7, 2)
    assert net.forward(x=rand(7, 3))["twice"].shape == (7, 2)


# --- the views -------------------------------------------------------------------------
def test_blobs_params_layers_and_names(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    assert list(net.blobs) == ["x", "y", "out", "loss"] == net._blob_names
    blob = net.blobs["x"]
    blob.data[...] = 3
    assert net.blobs["x"].data.sum() == 36 and blob.diff.shape == (4, 3)
    assert list(net.params) == ["ip"] and [p.shape for p in net.params["ip"]] == [(2, 3), (2,)]
    assert [layer.type for layer in net.layers] == ["Input", "InnerProduct", "EuclideanLoss"]
    assert net.layers[1].blobs[0] is net.params["ip"][0]
    assert net._layer_names == ["input", "ip", "loss"] and list(net.layer_dict) == net._layer_names
    assert net.inputs == ["x", "y"] and net.outputs == ["loss"]
    assert net.top_names == {"input": ["x", "y"], "ip": ["out"], "loss": ["loss"]}
    assert net.bottom_names == {"input": [], "ip": ["x"], "loss": ["out", "y"]}
    assert net.top_names[1] == ["out"]  # by position too
    assert net.blob_loss_weights == {"loss": 1.0}


def test_blob_api_matches_pycaffe():
    blob = caffe.Blob((2, 3, 4, 5))
    assert (blob.num, blob.channels, blob.height, blob.width) == (2, 3, 4, 5)
    assert blob.count == 120 and blob.count() == 120 and blob.count(1) == 60 and blob.count(1, 3) == 12
    assert blob.shape == (2, 3, 4, 5) and blob.data.dtype == np.float32 and blob.diff.shape == blob.shape
    blob.reshape(6, 7)
    assert blob.count == 42 and (blob.num, blob.channels, blob.height, blob.width) == (6, 7, 1, 1)
    blob.reshape((3,))
    assert blob.shape == (3,) and blob.count == 3


def test_copy_from_save_and_share_with(net_file, tmp_path):
    a = caffe.Net(net_file, caffe.TRAIN)
    b = caffe.Net(net_file, caffe.TEST)
    path = tmp_path / "a.caffemodel"
    a.save(str(path))
    b.copy_from(str(path))
    np.testing.assert_array_equal(a.params["ip"][0].data, b.params["ip"][0].data)
    c = caffe.Net(net_file, caffe.TEST)
    c.share_with(a)
    a.params["ip"][0].data[...] = 7
    np.testing.assert_array_equal(c.params["ip"][0].data, 7)
    other = caffe.Net(NET.replace("num_output: 2", "num_output: 5").replace("dim: 2", "dim: 5"), caffe.TEST)
    with pytest.raises(ShapeError, match=r"layer 'ip' \(InnerProduct\): cannot share parameter blob 0: "
                                         r"shape \(2, 3\) here but \(5, 3\)"):
        c.share_with(other)


def test_set_input_arrays_needs_a_memory_data_layer_first(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    with pytest.raises(NetConfigError, match=r"set_input_arrays needs a MemoryData layer as the first layer, "
                                             r"but the net starts with 'input' \(Input\)"):
        net.set_input_arrays(np.zeros((4, 1, 2, 2)), np.zeros(4))
    fed = []
    first = net.layers[0]
    first.type = "MemoryData"  # stand-in: the call hands the arrays to the layer's reset()
    first.reset = lambda data, labels: fed.append((data, labels))
    net.set_input_arrays(np.zeros((4, 1, 2, 2)), np.arange(4))
    assert fed[0][0].dtype == np.float32 and fed[0][1].shape == (4, 1, 1, 1)
    with pytest.raises(ShapeError, match="with the same N"):
        net.set_input_arrays(np.zeros((4, 1, 2, 2)), np.arange(3))


# --- solvers from Python ---------------------------------------------------------------
SOLVER_NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "out"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }
"""


def write_solver(folder, kind="SGD"):
    (folder / "tiny.prototxt").write_text(SOLVER_NET)
    path = folder / "solver.prototxt"
    momentum = 0 if kind in ("AdaGrad", "RMSProp") else 0.9  # those refuse momentum, as in Caffe
    path.write_text(f'net: "{folder / "tiny.prototxt"}"\ntype: "{kind}"\ntest_iter: 1\ntest_interval: 100\n'
                    f'base_lr: 0.01\nmomentum: {momentum}\nlr_policy: "fixed"\nmax_iter: 6\ndisplay: 0\n'
                    f'random_seed: 1\nsnapshot_prefix: "{folder / "snap"}"\n')
    return str(path)


def test_solver_step_solve_snapshot_restore(tmp_path):
    path = write_solver(tmp_path)
    solver = caffe.SGDSolver(path)
    assert solver.iter == 0 and len(solver.test_nets) == 1 and solver.net.phase == caffe.TRAIN
    before = solver.net.params["ip"][0].data.copy()
    solver.step(3)
    assert solver.iter == 3 and not np.array_equal(before, solver.net.params["ip"][0].data)
    model, state = solver.snapshot()
    assert model.endswith("snap_iter_3.caffemodel") and state.endswith("snap_iter_3.solverstate")
    solver.step(3)
    resumed = caffe.get_solver(path)
    resumed.restore(state)
    assert resumed.iter == 3
    resumed.step(3)
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, solver.net.params["ip"][0].data)
    fresh = caffe.get_solver(path)
    fresh.solve()
    assert fresh.iter == 6
    np.testing.assert_array_equal(fresh.net.params["ip"][0].data, solver.net.params["ip"][0].data)
    # the test net sees the trained weights (shared when it is tested, as in Caffe)
    test_net = fresh.test_nets[0]
    np.testing.assert_array_equal(test_net.params["ip"][0].data, fresh.net.params["ip"][0].data)


@pytest.mark.parametrize("kind", ["Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_get_solver_picks_the_type_and_each_class_steps(tmp_path, kind):
    path = write_solver(tmp_path, kind)
    solver = caffe.get_solver(path)
    assert type(solver) is getattr(caffe, f"{kind}Solver")
    solver.step(2)
    assert solver.iter == 2

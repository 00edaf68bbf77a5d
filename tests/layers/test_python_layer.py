"""Python layers: import from the prototxt's folder then sys.path, param_str/phase/blobs,
gradients, training inside a net from Python, and the errors for a missing module, class or
method."""
import sys

import numpy as np
import pytest

from pycaffe_lite import TEST, TRAIN
from pycaffe_lite.errors import NetConfigError, ShapeError
from pycaffe_lite.net import Net
from pycaffe_lite.solvers import SGDSolver
from pycaffe_lite.testing import check_gradient

from .layer_test_template import as_blobs, forward, make_layer

GRADIENT_CHECKED = {"Python"}

#: a Euclidean loss written pycaffe's way (a subclass of the framework's Layer, pycaffe's
#: ``caffe.Layer``), scaled by the top diff so that it also honours loss_weight
PYLOSS = '''
import numpy as np
import pycaffe_lite as caffe


class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i, sign in enumerate((1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * top[0].diff[0] * self.diff / bottom[i].num


class ChannelScaleLayer:
    """top = bottom * w per channel; w learnable, initialised from param_str (no base class)."""

    def setup(self, bottom, top):
        import ast
        init = ast.literal_eval(self.param_str or "{}").get("init", 1.0)
        self.seen_phase = self.phase
        if len(self.blobs) == 0:
            self.blobs.add_blob(bottom[0].channels)
            self.blobs[0].data[...] = init

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(0)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data


class NoBackward:
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass


class NoForward(caffe.Layer):
    def reshape(self, bottom, top):
        pass


class BrokenForward(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def forward(self, bottom, top):
        raise ValueError("boom")
'''


@pytest.fixture
def model_dir(tmp_path):
    """A model folder holding pyloss.py; ``pyloss`` is forgotten before and after the test."""
    (tmp_path / "pyloss.py").write_text(PYLOSS)
    sys.modules.pop("pyloss", None)
    yield tmp_path
    sys.modules.pop("pyloss", None)


def python_layer(folder, layer, bottoms, extra="", num_top=1):
    """Build a Python layer as a net would (its prototxt in ``folder``) and set it up."""
    text = f'type: "Python" python_param {{ module: "pyloss" layer: "{layer}" {extra} }}'
    net_file = folder / "net.prototxt"
    net_file.write_text("# the layer's prototxt\n")
    lay = make_layer(text)
    lay.net_file = str(net_file)
    bottom = as_blobs(bottoms)
    from pycaffe_lite.blob import Blob

    top = [Blob(name=f"top{i}") for i in range(num_top)]
    lay.set_up(bottom, top)
    return lay, bottom, top


# --- forward, gradients ------------------------------------------------------------------
def test_euclidean_python_loss_forward_and_gradient(model_dir):
    layer, bottom, top = python_layer(model_dir, "EuclideanLossLayer", [(4, 3, 2), (4, 3, 2)])
    assert top[0].shape == (1,) and layer.loss_weights == [0.0]  # as in Caffe: loss_weight is explicit
    forward(layer, bottom, top)
    x, y = (b.data.astype(np.float64) for b in bottom)
    np.testing.assert_allclose(top[0].data[0], ((x - y) ** 2).sum() / 4 / 2, rtol=1e-6)
    assert check_gradient(layer, bottom, top, setup=False) == 2 * 24


def test_duck_typed_layer_with_a_learnable_blob(model_dir):
    layer, bottom, top = python_layer(model_dir, "ChannelScaleLayer", [(5, 3)], "param_str: \"{'init': 0.5}\"")
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.5)
    assert layer.seen_phase == layer.phase  # user attributes read through the wrapper
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, bottom[0].data * 0.5)
    layer.blobs[0].data[...] = [0.3, -1.2, 2.0]
    assert check_gradient(layer, bottom, top, setup=False) == 15 + 3


def test_blobs_add_blob_takes_a_shape_or_ints():
    from pycaffe_lite.layers.python_layer import BlobVec

    vec = BlobVec(owner="p")
    assert vec.add_blob(2, 3).shape == (2, 3)
    assert vec.add_blob((4,)).shape == (4,)
    assert len(vec) == 2 and vec[1].name == "p[1]" and not vec[0].data.any()


# --- inside a net ----------------------------------------------------------------------
NET = """
name: "pynet"
layer {{ name: "data" type: "Input" top: "x" top: "y"
  input_param {{ shape {{ dim: 8 dim: 3 }} shape {{ dim: 8 dim: 2 }} }} }}
layer {{ name: "scale" type: "Python" bottom: "x" top: "xs"
  python_param {{ module: "pyloss" layer: "ChannelScaleLayer" param_str: "{{'init': 1.5}}" }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "xs" top: "out"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
{loss}
"""
PY_LOSS = ('layer { name: "loss" type: "Python" bottom: "out" bottom: "y" top: "loss" loss_weight: 1\n'
           '  python_param { module: "pyloss" layer: "EuclideanLossLayer" } }')
BUILTIN_LOSS = 'layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "y" top: "loss" }'


def write_model(folder, loss):
    (folder / "net.prototxt").write_text(NET.format(loss=loss))
    (folder / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 100\n'
        "display: 0\nrandom_seed: 3\n")
    return str(folder / "solver.prototxt")


def train(solver_path, steps):
    rs = np.random.default_rng(0)
    solver = SGDSolver(solver_path)
    solver.net.blobs["x"].data[...] = rs.normal(size=(8, 3))
    solver.net.blobs["y"].data[...] = rs.normal(size=(8, 2))
    losses = []
    for _ in range(steps):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data.ravel()[0]))
    return solver, losses


def test_python_layers_train_inside_a_net_like_the_builtin_loss(model_dir, tmp_path_factory):
    py_solver, py_losses = train(write_model(model_dir, PY_LOSS), 6)
    ref_dir = tmp_path_factory.mktemp("builtin")
    (ref_dir / "pyloss.py").write_text(PYLOSS)
    ref_solver, ref_losses = train(write_model(ref_dir, BUILTIN_LOSS), 6)
    assert py_losses[-1] < py_losses[0]
    np.testing.assert_allclose(py_losses, ref_losses, rtol=1e-5)
    for a, b in zip(py_solver.net.learnable_params, ref_solver.net.learnable_params):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)
    # the Python layer's blob is a learnable parameter: trained, listed, saved and loaded
    scale = py_solver.net.params["scale"][0]
    assert not np.allclose(scale.data, 1.5)
    py_solver.net.save(tmp_path_factory.mktemp("w") / "w.caffemodel")


def test_python_layer_weights_round_trip_through_a_caffemodel(model_dir):
    path = model_dir / "net.prototxt"
    path.write_text(NET.format(loss=PY_LOSS))
    net = Net(str(path), TRAIN)
    net.params["scale"][0].data[...] = [1.0, 2.0, 3.0]
    net.save(model_dir / "w.caffemodel")
    again = Net(str(path), TEST, weights=str(model_dir / "w.caffemodel"))
    np.testing.assert_array_equal(again.params["scale"][0].data, [1.0, 2.0, 3.0])
    assert again.layer_dict["scale"].seen_phase == TEST and net.layer_dict["scale"].seen_phase == TRAIN


def test_the_prototxts_folder_wins_over_sys_path(model_dir, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("elsewhere")
    (other / "pyloss.py").write_text("class EuclideanLossLayer:\n    pass\n")
    monkeypatch.syspath_prepend(str(other))
    import pyloss  # noqa: F401  (the sys.path one is imported first)

    (model_dir / "net.prototxt").write_text(NET.format(loss=PY_LOSS))
    net = Net(str(model_dir / "net.prototxt"), TRAIN)
    assert type(net.layer_dict["loss"].instance).__module__ == "pyloss"
    assert sys.modules["pyloss"].__file__ == str(model_dir / "pyloss.py")


def test_a_module_on_sys_path_is_found_for_inline_text(model_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(model_dir))
    net = Net(NET.format(loss=PY_LOSS), TRAIN)  # prototxt text: no folder of its own
    assert net.layer_dict["loss"].type == "Python"


# --- errors ----------------------------------------------------------------------------
def py_net(folder, module, layer, bottom='bottom: "x" top: "z"'):
    text = ('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
            f'layer {{ name: "py" type: "Python" {bottom}\n'
            f'  python_param {{ module: "{module}" layer: "{layer}" }} }}\n')
    path = folder / "net.prototxt"
    path.write_text(text)
    return str(path)


def test_missing_module_names_the_layer_module_and_search_path(model_dir):
    with pytest.raises(NetConfigError, match=r"net.prototxt:2: layer 'py' \(Python\): cannot import module "
                                             r"'no_such_mod': not found in .* \(the prototxt's folder\) then "
                                             r"sys.path"):
        Net(py_net(model_dir, "no_such_mod", "X"), TRAIN)


def test_module_that_fails_to_import_says_why(model_dir):
    (model_dir / "badmod.py").write_text("import not_a_real_dependency_xyz\n")
    sys.modules.pop("badmod", None)
    with pytest.raises(NetConfigError, match=r"layer 'py' \(Python\): importing module 'badmod' failed: "
                                             r"ModuleNotFoundError: .*not_a_real_dependency_xyz"):
        Net(py_net(model_dir, "badmod", "X"), TRAIN)


def test_missing_class_lists_the_modules_classes(model_dir):
    with pytest.raises(NetConfigError, match=r"layer 'py' \(Python\): module 'pyloss' \(.*pyloss.py\) has no class "
                                             r"'Nope'; its classes: BrokenForward, ChannelScaleLayer, "
                                             r"EuclideanLossLayer, NoBackward, NoForward"):
        Net(py_net(model_dir, "pyloss", "Nope"), TRAIN)


def test_class_without_backward_is_refused_when_it_has_bottoms(model_dir):
    with pytest.raises(NetConfigError, match=r"layer 'py' \(Python\): class 'NoBackward' of module 'pyloss' "
                                             r"lacks backward; a Python layer needs setup"):
        Net(py_net(model_dir, "pyloss", "NoBackward"), TRAIN)
    # a source layer (no bottoms) never runs backward, so it may leave it out
    net = Net(py_net(model_dir, "pyloss", "NoBackward", bottom='top: "z"'), TRAIN)
    assert "z" in net.blobs


def test_layer_subclass_must_define_forward(model_dir):
    with pytest.raises(NetConfigError, match=r"layer 'py' \(Python\): class 'NoForward' of module 'pyloss' "
                                             r"lacks forward"):
        Net(py_net(model_dir, "pyloss", "NoForward"), TRAIN)


def test_python_param_needs_module_and_layer(model_dir):
    with pytest.raises(NetConfigError, match=r"python_param needs both module and layer"):
        Net(py_net(model_dir, "", "X"), TRAIN)


def test_errors_inside_the_users_code_name_the_layer(model_dir):
    net = Net(py_net(model_dir, "pyloss", "BrokenForward"), TRAIN)
    with pytest.raises(ValueError, match="boom") as info:
        net.forward()
    if sys.version_info >= (3, 11):
        assert "in forward() of" in "".join(info.value.__notes__)
        assert "layer 'py' (Python), class pyloss.BrokenForward" in "".join(info.value.__notes__)


def test_errors_in_setup_become_a_shape_error_naming_the_layer(model_dir):
    (model_dir / "net.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "loss" type: "Python" bottom: "x" top: "l"\n'
        '  python_param { module: "pyloss" layer: "EuclideanLossLayer" } }\n')
    with pytest.raises(ShapeError, match=r"layer 'loss' \(Python\): set-up failed \(Exception: Need two inputs"):
        Net(str(model_dir / "net.prototxt"), TRAIN)

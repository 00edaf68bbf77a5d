"""Python layers: a layer written as a Python class and named in the prototxt, as in pycaffe.

::

    layer { name: "loss" type: "Python" bottom: "pred" bottom: "label" top: "loss"
            python_param { module: "pyloss" layer: "EuclideanLossLayer" param_str: "{'scale': 2}" }
            loss_weight: 1 }

``module`` is imported from the prototxt's folder first, then from ``sys.path``; ``layer``
names a class in it: a subclass of :class:`pycaffe_lite.Layer` (built with the
LayerParameter, as pycaffe builds ``caffe.Layer``; it defines at least ``reshape`` and
``forward``) or any class whose no-argument instances have ``setup(bottom, top)``, ``reshape(bottom, top)``, ``forward(bottom, top)``
and ``backward(top, propagate_down, bottom)`` (``backward`` may be left out by layers
without bottoms).  Before ``setup`` the instance gets ``param_str``, ``phase`` and
``blobs``: a list of learnable :class:`~pycaffe_lite.blob.Blob` that ``setup`` may grow
with ``self.blobs.add_blob(*shape)``; the net trains and saves them like any layer's.

Bottoms and tops are Blobs with pycaffe's interface (``data``, ``diff``, ``reshape(*shape)``,
``shape``, ``count``, ``num``/``channels``/``height``/``width``).  As in Caffe, a Python loss
layer needs an explicit ``loss_weight`` to count as a loss; ``share_in_parallel`` has no
effect (one process).  Attributes that the wrapper lacks are read from the instance, so
``net.layers[i].my_attribute`` reaches the user's object.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import logging
import os
import sys

from ..blob import Blob
from ..layer import Layer
from ..registry import register_layer

log = logging.getLogger("pycaffe_lite")

REQUIRED_METHODS = ("setup", "reshape", "forward", "backward")


class BlobVec(list):
    """pycaffe's ``layer.blobs``: a list of Blobs with ``add_blob(*shape)``."""

    def __init__(self, blobs=(), owner: str = "") -> None:
        super().__init__(blobs)
        self.owner = owner

    def add_blob(self, *shape) -> Blob:
        """Append (and return) a zero-filled Blob of ``shape``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        blob = Blob(shape, name=f"{self.owner}[{len(self)}]")
        self.append(blob)
        return blob


def _inside(module, folder: str) -> bool:
    path = getattr(module, "__file__", None)
    if not path:
        return False
    folder = os.path.abspath(folder)
    return os.path.commonpath([os.path.abspath(path), folder]) == folder


def import_layer_module(module: str, folder: str | None):
    """Import ``module`` from ``folder`` when it is there, else from ``sys.path``.

    A same-named module imported earlier from elsewhere is replaced by the folder's, so that two
    models with a ``layers.py`` each get their own.
    """
    top = module.partition(".")[0]
    if folder and importlib.machinery.PathFinder.find_spec(top, [folder]) is not None:
        cached = sys.modules.get(top)
        if cached is not None and not _inside(cached, folder):
            log.debug("Python layer module '%s': using the one in %s instead of %s", module, folder,
                      getattr(cached, "__file__", "?"))
            for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
                del sys.modules[name]
        sys.path.insert(0, folder)
        try:
            return importlib.import_module(module)
        finally:
            sys.path.remove(folder)
    return importlib.import_module(module)


@register_layer("Python", v1="PYTHON")
class PythonLayer(Layer):
    """A layer implemented by a user's Python class (``python_param { module layer param_str }``).

    Bottom/Top/Blobs: whatever the class defines.  Forward and backward are the class's;
    this wrapper imports it, hands it ``param_str``/``phase``/``blobs`` and calls it.
    """

    #: the prototxt this layer was read from (set by the Net), whose folder is searched first
    net_file: str | None = None

    def __init__(self, layer_param, where: str = "") -> None:
        super().__init__(layer_param, where)
        self.blobs = BlobVec(self.blobs, owner=self.name)
        self.instance = None

    def __getattr__(self, name: str):
        # only reached for attributes the wrapper lacks: the user's own (net.layers[i].x)
        instance = self.__dict__.get("instance")
        if instance is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(instance, name)

    # ------------------------------------------------------------------ building
    def _folder(self) -> str | None:
        if self.net_file and os.path.isfile(self.net_file):
            return os.path.dirname(os.path.abspath(self.net_file))
        return None

    def _search_path(self) -> str:
        folder = self._folder()
        places = ([f"{folder} (the prototxt's folder)"] if folder else []) + ["sys.path"]
        return " then ".join(places)

    def _load_class(self):
        pp = self.layer_param.python_param
        if not pp.module or not pp.layer:
            raise self.config_error('python_param needs both module and layer, e.g. python_param { '
                                    'module: "pyloss" layer: "EuclideanLossLayer" }')
        try:
            module = import_layer_module(pp.module, self._folder())
        except ModuleNotFoundError as e:
            if e.name is not None and (pp.module == e.name or pp.module.startswith(e.name + ".")):
                raise self.config_error(
                    f"cannot import module '{pp.module}': not found in {self._search_path()}. Put "
                    f"{pp.module.replace('.', '/')}.py next to the prototxt or on PYTHONPATH"
                ) from None
            raise self.config_error(f"importing module '{pp.module}' failed: {type(e).__name__}: {e}") from e
        except Exception as e:  # the module itself raised while importing
            raise self.config_error(f"importing module '{pp.module}' failed: {type(e).__name__}: {e}") from e
        cls = getattr(module, pp.layer, None)
        if cls is None or not isinstance(cls, type):
            classes = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
            raise self.config_error(
                f"module '{pp.module}' ({getattr(module, '__file__', '?')}) has no class '{pp.layer}'; "
                f"its classes: {', '.join(classes) or 'none'}"
            )
        return cls

    def setup(self, bottom, top) -> None:
        pp = self.layer_param.python_param
        cls = self._load_class()
        is_layer = issubclass(cls, Layer)
        if is_layer:  # the base class supplies setup and backward; reshape and forward are the layer's own
            missing = [m for m in ("reshape", "forward") if getattr(cls, m) is getattr(Layer, m)]
        else:
            required = REQUIRED_METHODS if bottom else REQUIRED_METHODS[:3]
            missing = [m for m in required if not callable(getattr(cls, m, None))]
        if missing:
            raise self.config_error(
                f"class '{pp.layer}' of module '{pp.module}' lacks {', '.join(missing)}; a Python layer needs "
                "setup(bottom, top), reshape(bottom, top), forward(bottom, top) and "
                "backward(top, propagate_down, bottom)"
            )
        try:
            inst = cls(self.layer_param) if is_layer else cls()
        except Exception as e:
            raise self.config_error(f"creating {pp.module}.{pp.layer} failed: {type(e).__name__}: {e}") from e
        if is_layer:
            # the wrapper already holds the blobs stored in the LayerParameter; the instance shares them
            inst.where = self.where
            inst.type = self.type
            inst.check_blob_counts(bottom, top)
        inst.param_str = pp.param_str
        inst.phase = self.phase
        inst.blobs = self.blobs
        self.instance = inst
        self._call("setup", bottom, top)
        if inst.blobs is not self.blobs:  # the class replaced its blob list
            self.blobs = BlobVec(inst.blobs, owner=self.name)
            inst.blobs = self.blobs

    def _call(self, method: str, *args) -> None:
        try:
            getattr(self.instance, method)(*args)
        except Exception as e:
            pp = self.layer_param.python_param
            if hasattr(e, "add_note"):  # Python >= 3.11
                e.add_note(f"in {method}() of {self.describe()}, class {pp.module}.{pp.layer}")
            raise

    # ------------------------------------------------------------------ running
    def reshape(self, bottom, top) -> None:
        self._call("reshape", bottom, top)

    def forward(self, bottom, top) -> None:
        self._call("forward", bottom, top)

    def backward(self, top, propagate_down, bottom) -> None:
        self._call("backward", top, list(propagate_down), bottom)

    def allow_force_backward(self, bottom_index: int) -> bool:
        allow = getattr(self.instance, "allow_force_backward", None)
        return bool(allow(bottom_index)) if callable(allow) else True

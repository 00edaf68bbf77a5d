"""Reading and writing Caffe's files: prototxt nets and solvers, caffemodels.

Also pycaffe's ``caffe.io``: ``Transformer``, ``load_image``, ``resize_image``,
``array_to_blobproto``, ``blobproto_to_array``, ``array_to_datum``, ``datum_to_array``
(loaded on first use; ``io.prototxt`` and ``io.caffemodel`` stay plain submodules).
"""

_PYCAFFE = {
    "Transformer": "transformer",
    "load_image": "transformer",
    "resize_image": "transformer",
    "array_to_blobproto": "arrays",
    "blobproto_to_array": "arrays",
    "array_to_datum": "arrays",
    "datum_to_array": "arrays",
}

__all__ = list(_PYCAFFE)


def __getattr__(name):
    if name in _PYCAFFE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_PYCAFFE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

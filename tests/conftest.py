"""Shared fixtures: where ../shared lives, and a small MNIST LMDB made once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Training in tests keeps its BLAS threads whatever the machine's load (the busy-machine guard could
# otherwise change thread counts mid-run under a loaded CI); tests/test_threads.py tests the guard.
os.environ.setdefault("PLITE_ADAPT_THREADS", "0")

ROOT = Path(__file__).resolve().parents[1]
#: ../shared beside the project (or wherever PLITE_SHARED points)
SHARED = Path(os.environ.get("PLITE_SHARED", ROOT.parent / "shared"))


def shared_dir(*parts: str) -> Path:
    """A folder of ../shared, or a clean skip saying it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared Caffe fixtures are not available on this machine")
    return path


@pytest.fixture(scope="session")
def mnist_small(tmp_path_factory):
    """LMDBs of the first 300 training and 300 test digits of the bundled MNIST subset."""
    from pycaffe_lite.data.mnist import prepare_mnist

    out = tmp_path_factory.mktemp("mnist")
    prepare_mnist(out, limit=300)
    return out

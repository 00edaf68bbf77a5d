"""Model cards: the ``model.yaml`` beside each net in ``models/<net>/`` (``plite models``).

A card holds what Caffe's model zoo kept in a readme's front matter::

    name: LeNet
    task: image classification
    dataset: MNIST
    input_shape: [64, 1, 28, 28]
    source: LeCun et al., Proc. IEEE 1998
    weights: {file: lenet_iter_2000.caffemodel, sha256: null}   # or null
    licence: BSD-2-Clause

``files`` (role -> prototxt) is optional.  A weights file that is present is checked
against its sha256 when one is given.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import DataError

__all__ = ["REQUIRED_FIELDS", "ModelCard", "list_models", "read_card"]

REQUIRED_FIELDS = ("name", "task", "dataset", "input_shape", "source", "weights", "licence")


@dataclass
class ModelCard:
    folder: Path
    name: str
    task: str
    dataset: str
    input_shape: list[int]
    source: str
    weights_file: str | None
    weights_sha256: str | None
    licence: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path | None:
        return self.folder / self.weights_file if self.weights_file else None

    def weights_status(self) -> str:
        """``none``, ``absent``, ``present`` (no sha256 to check), ``ok`` or ``MISMATCH``."""
        path = self.weights_path
        if path is None:
            return "none"
        if not path.is_file():
            return "absent"
        if not self.weights_sha256:
            return "present"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return "ok" if digest == self.weights_sha256.lower() else "MISMATCH"


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and check one ``model.yaml``.

    Raises
    ------
    DataError
        Invalid YAML, a missing field, or a field of the wrong kind (the message names them).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such model card") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a model card is a mapping of fields ({', '.join(REQUIRED_FIELDS)})")
    missing = [k for k in REQUIRED_FIELDS if k not in data]
    if missing:
        raise DataError(f"{path}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    shape = data["input_shape"]
    if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
        raise DataError(f"{path}: input_shape must be a list of positive integers, got {shape!r}")
    weights = data["weights"]
    if weights is None:
        w_file = w_sha = None
    elif isinstance(weights, dict) and "file" in weights:
        w_file, w_sha = weights.get("file"), weights.get("sha256")
        if w_sha is not None and not (isinstance(w_sha, str) and len(w_sha) == 64):
            raise DataError(f"{path}: weights.sha256 must be 64 hex digits or null, got {w_sha!r}")
    else:
        raise DataError(f"{path}: weights must be null or {{file: NAME, sha256: HEX or null}}, got {weights!r}")
    files = data.get("files") or {}
    if not isinstance(files, dict):
        raise DataError(f"{path}: files must map a role (deploy, solver...) to a file name")
    return ModelCard(
        folder=path.parent, name=str(data["name"]), task=str(data["task"]), dataset=str(data["dataset"]),
        input_shape=list(shape), source=" ".join(str(data["source"]).split()), weights_file=w_file,
        weights_sha256=w_sha, licence=str(data["licence"]), files={str(k): str(v) for k, v in files.items()},
    )


def list_models(models_dir: str | os.PathLike = "models") -> tuple[list[ModelCard], list[Path]]:
    """Cards of every ``<models_dir>/*/model.yaml``, and the net folders that have none.

    Raises
    ------
    DataError
        ``models_dir`` does not exist, or a card is invalid.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise DataError(f"{models_dir}: no such folder; run from the repository's root or give --dir")
    cards, without = [], []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        card = folder / "model.yaml"
        if card.is_file():
            cards.append(read_card(card))
        elif any(folder.glob("*.prototxt")) or any(folder.glob("*.yaml")):
            without.append(folder)
    return cards, without

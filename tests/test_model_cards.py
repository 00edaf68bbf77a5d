"""Model cards (models/*/model.yaml): every model folder has a valid one; reading checks fields."""
from __future__ import annotations

import hashlib

import pytest

from pycaffe_lite.errors import DataError
from pycaffe_lite.model_cards import list_models, read_card
from tests.conftest import ROOT

CARD = """name: Tiny
task: classification
dataset: toy
input_shape: [1, 3, 8, 8]
source: nobody, 2024
weights: {file: w.caffemodel, sha256: SHA}
licence: MIT
"""


def test_every_model_folder_has_a_valid_card():
    cards, without = list_models(ROOT / "models")
    assert not without, f"model folders without a model.yaml card: {', '.join(p.name for p in without)}"
    names = {c.folder.name for c in cards}
    assert {"lenet", "mnist_autoencoder"} <= names
    for c in cards:
        for role, name in c.files.items():
            assert (c.folder / name).is_file(), f"{c.folder}/model.yaml: files.{role} names a missing {name}"


def test_weights_status(tmp_path):
    (tmp_path / "m").mkdir()
    card = tmp_path / "m" / "model.yaml"
    card.write_text(CARD.replace("SHA", "null"))
    assert read_card(card).weights_status() == "absent"
    (tmp_path / "m" / "w.caffemodel").write_bytes(b"weights")
    assert read_card(card).weights_status() == "present"
    card.write_text(CARD.replace("SHA", hashlib.sha256(b"weights").hexdigest()))
    assert read_card(card).weights_status() == "ok"
    card.write_text(CARD.replace("SHA", "a" * 64))
    assert read_card(card).weights_status() == "MISMATCH"
    card.write_text(CARD.replace("weights: {file: w.caffemodel, sha256: SHA}", "weights: null"))
    assert read_card(card).weights_status() == "none"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("licence: MIT\n", ""), r"model.yaml: missing field licence"),
    (lambda t: t.replace("[1, 3, 8, 8]", "[1, -3]"), r"input_shape must be a list of positive integers"),
    (lambda t: t.replace("sha256: SHA", "sha256: abc"), r"weights.sha256 must be 64 hex digits or null"),
    (lambda t: t.replace("{file: w.caffemodel, sha256: SHA}", "w.caffemodel"), r"weights must be null or"),
    (lambda t: "- a\n", r"a model card is a mapping of fields"),
    (lambda t: "name: [\n", r"invalid YAML"),
])
def test_card_errors(tmp_path, edit, message):
    card = tmp_path / "model.yaml"
    card.write_text(edit(CARD))
    with pytest.raises(DataError, match=message):
        read_card(card)


def test_folders_without_cards_are_reported(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "deploy.prototxt").write_text("")
    (tmp_path / "notes").mkdir()
    cards, without = list_models(tmp_path)
    assert cards == [] and [p.name for p in without] == ["net"]

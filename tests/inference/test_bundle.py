"""A model bundle's pieces checked against each other: each way a folder can be incomplete, stale or
mixed gives a BundleError naming the file and what to do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bundle_files import CLASSES, make_bundle
from stages.inference.bundle import BUNDLE_VERSION, BundleError, file_sha256, read_bundle
from stages.inference.onnx_scorer import OnnxScorer
from stages.inference.torch_scorer import TorchScorer, bundle_network
from stages.training.checkpoints import save

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundles") / "efficientnet_b0", onnx=True)


def copy_of(bundle, tmp_path):
    folder = tmp_path / bundle.folder.name
    shutil.copytree(bundle.folder, folder)
    return folder


def edit_card(folder, **changes):
    card = json.loads((folder / "card.json").read_text())
    card.update(changes)
    (folder / "card.json").write_text(json.dumps(card))


def test_a_complete_bundle_reads_back_what_was_written(exported):
    card = read_bundle(exported.folder).card
    assert card.classes == CLASSES and card.arch == "efficientnet_b0"
    assert card.threshold.value == 0.5 and card.audio.chunk_seconds == 1.0
    assert TorchScorer(exported, CPU, 4) and OnnxScorer(exported, 1)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "card.json").unlink(), "no card.json"),
    (lambda f: (f / "best.pt").unlink(), "no best.pt beside card.json"),
    (lambda f: edit_card(f, format_version=BUNDLE_VERSION + 1), f"bundle format version {BUNDLE_VERSION + 1}"),
    (lambda f: edit_card(f, format="something else"), "not a model card of this pipeline"),
    (lambda f: edit_card(f, mel={"n_mels": 32}), "a field is missing or malformed"),
    (lambda f: (f / "card.json").write_text("{not json"), "card.json: unreadable"),
])
def test_an_incomplete_or_foreign_bundle_is_refused(exported, tmp_path, damage, message):
    folder = copy_of(exported, tmp_path)
    damage(folder)
    with pytest.raises(BundleError, match=message):
        read_bundle(folder)


def test_weights_of_another_training_are_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    other = make_bundle(tmp_path / "other", seed=7)
    shutil.copy(other.weights, folder / "best.pt")
    with pytest.raises(BundleError, match="not the checkpoint card.json describes .* mixes two trainings"):
        read_bundle(folder)


def test_a_class_list_that_disagrees_with_the_weights_is_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    edit_card(folder, classes=CLASSES + ["sonspa"])
    with pytest.raises(BundleError, match="lists 5 classes but .*best.pt was trained on 4"):
        bundle_network(read_bundle(folder))


def test_weights_whose_shape_disagrees_with_their_class_list_are_refused(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    state = torch.load(folder / "best.pt", weights_only=True)
    state["classes"] = CLASSES[:3]
    save(state, folder / "best.pt")
    edit_card(folder, classes=CLASSES[:3], weights_sha256=file_sha256(folder / "best.pt"))
    with pytest.raises(BundleError, match="its weights do not fit this model"):
        bundle_network(read_bundle(folder))


def test_the_onnx_backend_needs_a_current_export(exported, tmp_path):
    folder = copy_of(exported, tmp_path)
    (folder / "model.onnx").unlink()
    with pytest.raises(BundleError, match="no model.onnx. Export it first: python -m stages.export"):
        OnnxScorer(read_bundle(folder), 1)
    stale = make_bundle(tmp_path / "retrained", seed=3)
    shutil.copy(exported.onnx, stale.onnx)  # an export of other weights
    with pytest.raises(BundleError, match=r"exported from other weights .*\(stale export\)"):
        OnnxScorer(stale, 1)
    (folder / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="ONNX Runtime cannot load it"):
        OnnxScorer(read_bundle(folder), 1)

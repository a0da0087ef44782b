"""stages/training/checkpoints.py: checkpoints are read without running code, and a damaged or foreign file gives
one CheckpointError that names the file and the remedy, never the unsafe `weights_only=False`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from checkpoint_files import ARCH, CLASSES, DAMAGED, UNSAFE, best_checkpoint, shown, small_model
from stages.training.checkpoints import CheckpointError, load_best_weights, load_resumable, read, save


class RunsACommand:
    """A pickle that runs a shell command when it is unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


# ------------------------------------------------------------------------------------- damaged files

@pytest.mark.parametrize("damage", DAMAGED, ids=lambda f: f.__name__)
def test_damaged_best_checkpoint_names_the_file_and_the_remedy(tmp_path, damage):
    path = tmp_path / "best.pt"
    damage(path)
    with pytest.raises(CheckpointError) as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    message = str(caught.value)
    assert str(path) in message
    assert "dvc repro train@" in message  # the remedy: write it again
    assert UNSAFE not in shown(caught.value)


@pytest.mark.parametrize("damage", DAMAGED, ids=lambda f: f.__name__)
def test_read_refuses_damaged_files(tmp_path, damage):
    path = tmp_path / "some.pt"
    damage(path)
    with pytest.raises(CheckpointError) as caught:
        read(path, "Do something about it.")
    assert str(path) in str(caught.value) and "Do something about it." in str(caught.value)
    assert UNSAFE not in shown(caught.value)


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    with pytest.raises(CheckpointError, match="not found") as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("wrap", [lambda payload: payload, lambda payload: {"model": {"weight": payload}}],
                         ids=["bare", "inside_a_checkpoint"])
def test_a_pickle_payload_is_refused_and_never_runs(tmp_path, wrap):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "best.pt"
    torch.save(wrap(RunsACommand(marker)), path)
    assert not marker.exists()
    with pytest.raises(CheckpointError) as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert not marker.exists(), "loading the checkpoint ran the payload's command"
    assert str(path) in str(caught.value)
    assert UNSAFE not in shown(caught.value)
    # The same for a resume state: refused (moved aside), not run.
    state = tmp_path / "resume" / "last.pt"
    state.parent.mkdir()
    path.replace(state)
    assert load_resumable(state, "fingerprint", 5) is None
    assert not marker.exists()
    # The payload is real: unpickled the unsafe way, it does run (the control for the assertions above).
    torch.load(state.with_name("last.pt.damaged"), weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------------------------- foreign files

def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = best_checkpoint(tmp_path / "best.pt", arch="ast_tiny")
    with pytest.raises(CheckpointError) as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    message = str(caught.value)
    assert str(path) in message and "'ast_tiny'" in message and f"'{ARCH}'" in message
    assert UNSAFE not in shown(caught.value)


def test_a_checkpoint_without_arch_or_classes_is_refused(tmp_path):
    """A best.pt written before arch and classes were recorded cannot be checked: it is refused."""
    path = tmp_path / "best.pt"
    save({"model": small_model().state_dict(), "epoch": 1, "valid_loss": 0.5}, path)
    with pytest.raises(CheckpointError) as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("classes", [["amerob", "norcar"], ["amerob", "rewbla", "norcar"],
                                     ["amerob", "norcar", "rewbla", "sonspa"]],
                         ids=["fewer", "reordered", "more"])
def test_a_checkpoint_of_another_class_list_is_refused(tmp_path, classes):
    path = best_checkpoint(tmp_path / "best.pt", classes=classes)
    with pytest.raises(CheckpointError, match="another class list") as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert str(path) in str(caught.value)
    assert UNSAFE not in shown(caught.value)


@pytest.mark.parametrize("weights", [
    pytest.param(lambda: small_model(5).state_dict(), id="wrong_shape"),
    pytest.param(lambda: {k: v for k, v in small_model().state_dict().items() if k != "2.bias"}, id="missing_key"),
    pytest.param(lambda: {**small_model().state_dict(), "3.weight": torch.zeros(2)}, id="unexpected_key"),
])
def test_weights_that_do_not_fit_the_model_are_refused(tmp_path, weights):
    path = best_checkpoint(tmp_path / "best.pt", model=weights())
    with pytest.raises(CheckpointError, match="do not fit this model") as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)  # torch's long listing is cut to its first line
    assert UNSAFE not in shown(caught.value)


def test_a_checkpoint_without_weights_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    save({"epoch": 1, "valid_loss": 0.5, "arch": ARCH, "classes": CLASSES}, path)
    with pytest.raises(CheckpointError) as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert str(path) in str(caught.value)


def test_a_good_checkpoint_loads_exactly(tmp_path):
    trained = small_model()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    path = tmp_path / "best.pt"
    save({"model": trained.state_dict(), "epoch": 2, "valid_loss": 0.5, "arch": ARCH, "classes": CLASSES}, path)
    fresh = small_model()
    state = load_best_weights(path, fresh, ARCH, CLASSES)
    assert state["epoch"] == 2 and state["arch"] == ARCH and state["classes"] == CLASSES
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # written atomically: no temporary left

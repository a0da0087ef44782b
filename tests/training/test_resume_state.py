"""The resume state of stages/training/checkpoints.py: it round-trips through the safe loader; a
damaged one (truncated, random bytes, short garbage, not a dict) is moved aside so that training
starts fresh; what is not resumed; and where it lives."""

from __future__ import annotations



import pytest
import torch

from stages.training.checkpoints import (CheckpointError, load_best_weights, load_resumable, read,
                                         resume_path, save)

from checkpoint_files import ARCH, CLASSES, DAMAGED, UNSAFE, empty, random_bytes, shown, small_model, truncated


def resume_state(epoch: int, fingerprint: str = "abc") -> dict:
    """What train writes as last.pt: model, optimizer (Adam after a step), scheduler, scaler, history."""
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    model(torch.ones(2, 8)).sum().backward()
    optimizer.step()
    scheduler.step()
    history = [{"epoch": e, "train_loss": 0.5, "valid_loss": 0.4, "valid_map": 0.3, "lr": 1e-3,
                "epoch_seconds": 1.5, "train_samples_per_second": 10.0} for e in range(1, epoch + 1)]
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(), "epoch": epoch,
            "history": history, "best": {"model": model.state_dict(), "epoch": 1, "valid_loss": 0.4,
                                         "arch": ARCH, "classes": CLASSES},
            "fingerprint": fingerprint}


def test_a_resume_state_round_trips_through_the_safe_loader(tmp_path):
    path = tmp_path / "last.pt"
    state = resume_state(2)
    save(state, path)
    loaded = load_resumable(path, "abc", 4)
    assert loaded is not None
    assert loaded["epoch"] == 2 and loaded["history"] == state["history"] and loaded["fingerprint"] == "abc"
    assert loaded["scheduler"] == state["scheduler"]
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for index, moments in state["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(loaded["optimizer"]["state"][index][name], value)


@pytest.mark.parametrize("damage", DAMAGED, ids=lambda f: f.__name__)
def test_a_damaged_resume_state_is_moved_aside_and_training_starts_fresh(tmp_path, damage, capsys):
    path = tmp_path / "efficientnet_b0-0123456789abcdef" / "last.pt"
    path.parent.mkdir()
    damage(path)
    content = path.read_bytes()
    assert load_resumable(path, "abc", 4) is None
    assert not path.exists()
    damaged = path.with_name("last.pt.damaged")
    assert damaged.read_bytes() == content  # kept for inspection, unchanged
    out = capsys.readouterr().out
    assert "warning" in out and str(path) in out and str(damaged) in out and "from scratch" in out
    assert UNSAFE not in out


def test_an_earlier_damaged_state_is_replaced(tmp_path, capsys):
    path = tmp_path / "last.pt"
    truncated(path)
    assert load_resumable(path, "abc", 4) is None
    empty(path)
    assert load_resumable(path, "abc", 4) is None
    assert path.with_name("last.pt.damaged").read_bytes() == b""
    assert not path.exists()


# Short files that are neither a zip nor a pickle: torch's safe unpickler fails on them with
# IndexError, KeyError or struct.error, not only the errors one would expect.
SHORT_GARBAGE = [b"second", b"hello world", b"X"]


@pytest.mark.parametrize("content", SHORT_GARBAGE)
def test_short_garbage_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_best_weights(path, small_model(), ARCH, CLASSES)
    assert str(path) in str(caught.value) and UNSAFE not in shown(caught.value)


def test_any_random_bytes_are_a_checkpoint_error(tmp_path):
    """200 seeded random files (about 1 in 20 escapes today, e.g. seeds giving IndexError or KeyError)."""
    path = tmp_path / "best.pt"
    escaped = {}
    for seed in range(200):
        random_bytes(path, seed)
        try:
            read(path, "")
        except CheckpointError:
            continue
        except Exception as err:  # noqa: BLE001 - what escapes is the finding
            escaped[seed] = type(err).__name__
    assert not escaped, f"not a CheckpointError: {escaped}"


@pytest.mark.parametrize("content", SHORT_GARBAGE)
def test_short_garbage_resume_state_is_moved_aside(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    assert load_resumable(path, "abc", 4) is None
    assert path.with_name("last.pt.damaged").read_bytes() == content


def test_what_is_not_resumed(tmp_path):
    path = tmp_path / "last.pt"
    assert load_resumable(path, "abc", 4) is None  # nothing there
    save(resume_state(2, fingerprint="abc"), path)
    assert load_resumable(path, "other", 4) is None  # another configuration
    assert load_resumable(path, "abc", 2) is None    # finished: no epoch left
    assert load_resumable(path, "abc", 1) is None
    assert path.exists() and not path.with_name("last.pt.damaged").exists()  # left alone, not damaged
    assert load_resumable(path, "abc", 3)["epoch"] == 2


def test_resume_path_is_keyed_by_model_and_fingerprint(tmp_path):
    fingerprint = "0123456789abcdef" * 4
    assert resume_path(tmp_path, "ast_tiny", fingerprint) == tmp_path / "ast_tiny-0123456789abcdef" / "last.pt"

"""What the checkpoint tests share: a small model and its best.pt as stage train writes it, the ways
a checkpoint file gets damaged, and what a user sees of an error."""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np
import torch

from stages.training.checkpoints import save

ARCH = "efficientnet_b0"
CLASSES = ["amerob", "norcar", "rewbla"]
UNSAFE = "weights_only=False"


def small_model(n_classes: int = len(CLASSES)) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_classes))


def best_checkpoint(path: Path, **changes) -> Path:
    """A best.pt as stage train writes it, with `changes` applied."""
    state = {"model": small_model().state_dict(), "epoch": 3, "valid_loss": 0.25, "arch": ARCH,
             "classes": list(CLASSES), **changes}
    save(state, path)
    return path


def shown(err: BaseException) -> str:
    """What a user sees: the message and the whole printed traceback, chained exceptions included."""
    return str(err) + "".join(traceback.format_exception(err))


def truncated(path: Path) -> None:
    best_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path, seed: int = 0) -> None:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def empty(path: Path) -> None:
    path.write_bytes(b"")


def not_a_dict(path: Path) -> None:
    torch.save([torch.zeros(3), torch.ones(2)], path)


def text_file(path: Path) -> None:
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")  # an LFS pointer


DAMAGED = [truncated, random_bytes, empty, not_a_dict, text_file]

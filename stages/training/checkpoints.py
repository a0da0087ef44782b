"""Checkpoint files: written atomically, read with `weights_only=True`, and checked before use.

A checkpoint is a dict of tensors and plain values (never arbitrary pickled objects), so loading
one cannot run code. A file that cannot be read that way is damaged or foreign: the error says so
and what to do, and never suggests the unsafe `weights_only=False`.

Two kinds are written by stage train:
- `best.pt` (a stage output): {"model": state_dict, "epoch", "valid_loss", "arch", "classes"};
- the resume state `last.pt`: everything needed to continue training after an interruption.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from stages.core.atomic import atomic_path
from stages.core.params import Params


class CheckpointError(ValueError):
    """A checkpoint file is damaged, foreign (another model, another class list) or not ours."""


def save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read(path: Path, remedy: str) -> dict:
    """The checkpoint at `path`, or CheckpointError naming the file and `remedy`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found. {remedy}") from None
    except Exception as err:  # noqa: BLE001 - garbage bytes raise anything from IndexError to struct.error
        raise CheckpointError(
            f"{path}: damaged or not a checkpoint written by this pipeline ({type(err).__name__}: it is "
            f"truncated, corrupt, or holds Python objects other than tensors). {remedy}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a checkpoint dict. {remedy}")
    return state


def load_best_weights(path: Path, model: torch.nn.Module, arch: str, classes: list[str]) -> dict:
    """Load `path` (a best.pt of stage train) into `model`, refusing a checkpoint of another model
    or class list; returns the checkpoint."""
    remedy = "Re-run the training stage (`dvc repro train@<model>`) to write it again."
    state = read(path, remedy)
    if state.get("arch") != arch:
        raise CheckpointError(f"{path}: a checkpoint of architecture {state.get('arch')!r}, but this model is "
                              f"{arch!r}. {remedy}")
    if state.get("classes") != classes:
        raise CheckpointError(f"{path}: trained for another class list ({len(state.get('classes') or [])} classes, "
                              f"this data has {len(classes)}). {remedy}")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: its weights do not fit this model ({first_line}). {remedy}") from None
    return state


def run_fingerprint(params: Params, model_name: str, prepared_dir: Path, features_dir: Path,
                    world_size: int = 1, background_dir: Path | None = None) -> str:
    """What a resume state must match to be resumed: the configuration, the data it was made from
    (the background noise too, when it is mixed in), and the number of processes that trained it
    (each rank augments its share with its own random stream, so the world size changes the result)."""
    digest = hashlib.sha256()
    config = {"lr": params.lr, "seed": params.seed, "train": vars(params.train),
              "model": vars(params.models[model_name])}
    if world_size > 1:  # a world of one keeps the fingerprints of runs made before data parallelism
        config["world_size"] = world_size
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    noise = (background_dir / "index.csv", background_dir / "stats.json") if background_dir else ()
    for path in (prepared_dir / "targets.npy", prepared_dir / "chunks.csv",
                 features_dir / "index.csv", features_dir / "stats.json", *noise):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def resume_path(resume_dir: Path, model_name: str, fingerprint: str) -> Path:
    return resume_dir / f"{model_name}-{fingerprint[:16]}" / "last.pt"


def load_resumable(path: Path, fingerprint: str, epochs: int) -> dict | None:
    """The resume state at `path` if it belongs to this run and has epochs left, else None.

    A damaged state (a disk filled up, a file edited by hand) must not block training forever: it is
    renamed to `last.pt.damaged` for inspection and training starts from scratch, with a warning.
    """
    if not path.exists():
        return None
    try:
        state = read(path, "")
    except CheckpointError as err:
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        print(f"warning: {str(err).strip()} Moved it to {damaged}; training starts from scratch.", flush=True)
        return None
    if state.get("fingerprint") != fingerprint or state.get("epoch", epochs) >= epochs:
        return None
    return state

"""What the training tests share: the tiny demo prepared and featurized in 1 s chunks (`Project`),
in-process and subprocess training runs, and comparisons of checkpoints and curves. The fixtures
that build it are in this folder's conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch

import stages.prepare
import stages.training.loop
from helpers import ONE_SECOND_CHUNKS, PLAIN_RECIPE, make_params, subprocess_env, write_params
from subprocesses import run_subprocess
from stages.training.loop import TrainPaths

# 1 s chunks of the tiny demo: 18 train and 9 valid chunks of 128 x 101, batches of 4.
SMALL = {
    **ONE_SECOND_CHUNKS,
    **PLAIN_RECIPE,
    "lr": 1e-3,
    "data.max_chunks_per_recording": 3,
    "data.valid_fraction": 0.2,
    "features.n_mels": 128,
    "features.hop_ms": 10.0,
    "train.epochs": 2,
    "train.batch_size": 4,
    "train.optimizer": "adam",
    "train.weight_decay": 0.0,
    "train.mixup_alpha": 0.0,
    "train.freq_mask": 16,
    "train.time_mask": 10,  # of 101 frames
    "train.device": "cpu",
    "train.threads": 1,  # see one_torch_thread
    "models.efficientnet_b0.arch": "efficientnet_b0",
    "models.efficientnet_b0.lr_scale": 1.0,
    "models.efficientnet_b0.pretrained": False,
    "models.ast_tiny.arch": "ast_tiny",
    "models.ast_tiny.lr_scale": 0.2,
    "models.ast_tiny.pretrained": False,
    "models.ast_tiny.options.fstride": 10,
    "models.ast_tiny.options.tstride": 10,
}
# Every random part of an epoch switched on (masks, mixup, EfficientNet's dropout), so the resume
# tests would see any randomness that does not depend on (seed, epoch) only.
RESUME = {"train.mixup_alpha": 0.4}
CURVES = ("train_loss", "valid_loss", "valid_map", "lr")  # history fields that must not depend on timing


class Project:
    """Prepared and featurized tiny demo data plus the params that made it."""

    def __init__(self, root: Path, demo_root: Path):
        self.root = root
        self.overrides = {**SMALL, "data.root": str(demo_root), "train.background": str(demo_root / "background")}
        self.prepared = root / "data" / "prepared"
        self.features = root / "data" / "features"
        self.background = root / "data" / "background"  # stage background's output, from the demo's clips

    def params(self, overrides: dict | None = None):
        return make_params({**self.overrides, **(overrides or {})})

    def write_params(self, path: Path, overrides: dict | None = None) -> Path:
        return write_params(path, {**self.overrides, **(overrides or {})})

    def prepare(self, out: Path, overrides: dict | None = None) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        params_file = self.write_params(out.parent / f"{out.name}.params.yaml", overrides)
        run_main(stages.prepare.main, "--params", params_file, "--out", out,
                 "--report", out.parent / f"{out.name}.report.json")


def run_main(main, *args) -> None:
    """A stage's real main() in this process (no interpreter start-up)."""
    with mock.patch.object(sys, "argv", [main.__module__, *map(str, args)]):
        main()


def train_env() -> dict[str, str]:
    return {**subprocess_env(), "OMP_NUM_THREADS": "1"}  # as one_torch_thread, for subprocesses


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint was written."""


class TrainRun:
    """stages.training.loop.train in this process, watching which checkpoint it resumes and which epochs
    it trains (one last.pt save per epoch trained), optionally stopped after an epoch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stop_after_epoch: int | None = None):
        self.resumed_epochs: list[int | None] = []
        self.epochs_trained: list[int] = []
        real_load, real_save = stages.training.loop.load_resumable, stages.training.loop.save

        def load_resumable(path, fingerprint, epochs):
            state = real_load(path, fingerprint, epochs)
            self.resumed_epochs.append(None if state is None else state["epoch"])
            return state

        def save(obj, path):
            real_save(obj, path)
            if Path(path).name == "last.pt":
                self.epochs_trained.append(obj["epoch"])
                if obj["epoch"] == stop_after_epoch:
                    raise Interrupted

        monkeypatch.setattr(stages.training.loop, "load_resumable", load_resumable)
        monkeypatch.setattr(stages.training.loop, "save", save)

    def __call__(self, project: Project, model: str, out: Path, overrides: dict | None = None,
                 prepared: Path | None = None) -> dict | None:
        params = project.params(overrides)
        try:
            return stages.training.loop.train(params, model, prepared or project.prepared, project.features,
                                              paths_beside(out, resume=out.parent / "resume",
                                                           background=project.background))
        except Interrupted:
            return None


def paths_beside(out: Path, resume: Path, background: Path | None = None) -> TrainPaths:
    """The train stage's folders: `out`, out_live/ beside it, `resume`, and the background features."""
    return TrainPaths(out, out.parent / f"{out.name}_live", resume, background)


def curves(history: list[dict]) -> list[tuple]:
    return [(r["epoch"], *(r[name] for name in CURVES)) for r in history]


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} tensors differ, first: {different[:3]}"


def read_tsv(live_dir: Path, metric: str) -> pd.DataFrame:
    return pd.read_csv(live_dir / "plots" / "metrics" / f"{metric}.tsv", sep="\t")


def train_command(params_file: Path, model: str, project: Project, out: Path) -> list[str]:
    return [sys.executable, "-m", "stages.train", "--params", str(params_file), "--model", model,
            "--prepared", str(project.prepared), "--features", str(project.features),
            "--out", str(out), "--live", str(out.parent / f"{out.name}_live"),
            "--resume-dir", str(out.parent / f"{out.name}_resume"), "--background", str(project.background)]


def run_to_end(command: list[str], cwd: Path) -> str:
    result = run_subprocess(command, cwd=cwd, env=train_env(), capture_output=True, text=True)
    assert result.returncode == 0, f"train failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout

"""The train stage on real data: the tiny demo set cut into 1 s chunks (128 x 101 log-mels),
prepared and featurized by the real stages, then real training on the CPU.

Covers: the loss goes down and the outputs (checkpoints, DVCLive metrics and curves, valid mAP per
epoch, the convergence readouts) are complete; the resume rule of stages/train.py, with a real SIGKILL
between two `python -m stages.train` runs compared bit for bit against an uninterrupted run, and the
cases where nothing may be resumed (another configuration or other data, a finished run, a damaged
resume state); two runs of one configuration with pinned CPU threads give identical weights.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch

import stages.featurize
import stages.prepare
import stages.training.loop
import stages.training.trainer
from helpers import ONE_SECOND_CHUNKS, make_params, subprocess_env, write_params
from stages.birdclef.prepared import read_classes
from stages.evaluation.run import evaluate
from stages.models.factory import create_model
from stages.training.loop import TrainPaths

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 1 s chunks of the tiny demo: 18 train and 9 valid chunks of 128 x 101, batches of 4.
SMALL = {
    **ONE_SECOND_CHUNKS,
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
        self.overrides = {**SMALL, "data.root": str(demo_root)}
        self.prepared = root / "data" / "prepared"
        self.features = root / "data" / "features"

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


@pytest.fixture(scope="module", autouse=True)
def outside_the_repo(tmp_path_factory):
    """In-process training runs from a scratch folder: DVCLive looks for a DVC/Git repository in
    the working directory, and the project's own one is not this test's business."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


def train_env() -> dict[str, str]:
    return {**subprocess_env(), "OMP_NUM_THREADS": "1"}  # as one_torch_thread, for subprocesses


@pytest.fixture(scope="module")
def project(demo_root, tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("train_project"), demo_root)
    params_file = project.write_params(project.root / "params.yaml")
    project.prepare(project.prepared)
    run_main(stages.featurize.main, "--params", params_file, "--chunks", project.prepared / "chunks.csv",
             "--out", project.features, "--report", project.root / "featurize_report.json")
    stats = json.loads((project.features / "stats.json").read_text())
    assert stats["shape"][1:] == [128, 101]
    splits = pd.read_csv(project.prepared / "chunks.csv")["split"].value_counts()
    assert splits["train"] >= 12 and splits["valid"] >= 4, splits.to_dict()
    return project


# ------------------------------------------------------------------------------------- helpers

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
                                      paths_beside(out, resume=out.parent / "resume"))
        except Interrupted:
            return None


def paths_beside(out: Path, resume: Path) -> TrainPaths:
    """The train stage's folders: `out`, out_live/ beside it, and `resume`."""
    return TrainPaths(out, out.parent / f"{out.name}_live", resume)


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
            "--resume-dir", str(out.parent / f"{out.name}_resume")]


def run_to_end(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, env=train_env(), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"train failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    return result.stdout


# ------------------------------------------------------------------------ training and outputs

# Batches of 6 (no batch of 2 for BatchNorm), no SpecAugment: a less noisy loss for 6 epochs.
@pytest.mark.parametrize("model, lr", [("efficientnet_b0", 5e-4), ("ast_tiny", 1e-3)])  # AST: x 0.2
def test_short_training_lowers_the_loss_and_writes_complete_outputs(project, model, lr, tmp_path):
    epochs = 6
    params = project.params({"lr": lr, "train.epochs": epochs, "train.batch_size": 6, "train.warmup_epochs": 1.0,
                             "train.freq_mask": 0, "train.time_mask": 0})
    out, live = tmp_path / "model", tmp_path / "live"
    summary = stages.training.loop.train(params, model, project.prepared, project.features,
                                 TrainPaths(out, live, tmp_path / "resume"))

    # The loss goes down: DVCLive's curve has one row per epoch, steps 1..epochs (epochs, 1-based).
    train_tsv = read_tsv(live, "train_loss")
    assert train_tsv["step"].tolist() == list(range(1, epochs + 1))
    losses = train_tsv["train_loss"].tolist()
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], f"train loss did not go down: {losses}"
    for metric in ("valid_loss", "valid_map", "lr", "epoch_seconds", "train_samples_per_second"):
        assert read_tsv(live, metric)["step"].tolist() == list(range(1, epochs + 1)), metric
    valid_map = read_tsv(live, "valid_map")["valid_map"].tolist()
    assert all(0.0 <= value <= 1.0 for value in valid_map), valid_map

    # The checkpoints load without pickle and agree with the curves.
    last, best = checkpoint(out / "last.pt"), checkpoint(out / "best.pt")
    assert last["epoch"] == epochs
    assert [r["epoch"] for r in last["history"]] == list(range(1, epochs + 1))
    assert [r["train_loss"] for r in last["history"]] == losses
    assert [r["valid_loss"] for r in last["history"]] == read_tsv(live, "valid_loss")["valid_loss"].tolist()
    assert [r["valid_map"] for r in last["history"]] == valid_map
    assert best["epoch"] == summary["best_epoch"]
    assert best["arch"] == params.models[model].arch and best["classes"] == read_classes(project.prepared)
    assert last["best"]["epoch"] == best["epoch"]
    assert_same_weights(last["best"]["model"], best["model"])  # the kept copy, not the live weights
    assert best["valid_loss"] == summary["min_valid_loss"] == min(r["valid_loss"] for r in last["history"])
    net = create_model(params.models[model].arch, len(read_classes(project.prepared)), 128, 101, False, params.models[model].options)
    net.load_state_dict(best["model"])  # strict: exactly this model's weights
    net.load_state_dict(last["model"])

    # The lr of each epoch's first step: epoch 1 starts the warm-up at 1/3 of the effective lr (3
    # steps per epoch: 18 chunks in batches of 6), epoch 2 starts the cosine at the full lr, which decays.
    lrs = read_tsv(live, "lr")["lr"].tolist()
    effective_lr = params.lr * params.models[model].lr_scale
    assert lrs[0] == pytest.approx(effective_lr / 3)
    assert lrs[1] == pytest.approx(effective_lr) and lrs[1:] == sorted(lrs[1:], reverse=True) and lrs[-1] > 0

    # DVCLive's metrics.json: the last epoch plus the run summary.
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["effective_lr"] == effective_lr == summary["effective_lr"]
    assert metrics["step"] == epochs
    assert metrics["epochs"] == epochs
    assert metrics["params_total"] == sum(p.numel() for p in net.parameters())
    assert metrics["params_trainable"] == metrics["params_total"]
    assert metrics["wall_clock_seconds"] > 0
    assert metrics["wall_clock_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in last["history"]))
    assert metrics["peak_memory_mib"] > 50
    assert metrics["device"] == "cpu"
    assert metrics["train_loss"] == losses[-1] and metrics["min_train_loss"] == min(losses)
    assert metrics["max_valid_map"] == max(valid_map)
    assert metrics["cpu_threads"] == 1 and torch.get_num_threads() == 1  # train.threads: 1
    assert {k: metrics[k] for k in summary} == summary

    # The convergence readouts, from the history by hand: the first epoch at most 10% above the final
    # valid loss, the seconds up to its end, the valid loss at the end of epochs 2, 3, 5, 6 (ceil of
    # 6/4, 12/4, 18/4, 24/4).
    valid_losses = [r["valid_loss"] for r in last["history"]]
    reached = next(i for i, loss in enumerate(valid_losses) if loss <= 1.1 * valid_losses[-1])
    assert metrics["convergence"] == {
        "learned": valid_losses[-1] < 0.9 * valid_losses[0], "valid_loss_first": valid_losses[0],
        "epochs_to_within_10pct": reached + 1,
        "seconds_to_within_10pct": pytest.approx(sum(r["epoch_seconds"] for r in last["history"][:reached + 1])),
        "valid_loss_q1": valid_losses[1], "valid_loss_q2": valid_losses[2],
        "valid_loss_q3": valid_losses[4], "valid_loss_q4": valid_losses[5]}

    # The valid mAP logged for the best epoch is the one evaluate finds for best.pt on the same chunks.
    result = evaluate(params, model, project.prepared, project.features, out / "best.pt", tmp_path / "eval")
    assert valid_map[best["epoch"] - 1] == pytest.approx(result["valid"]["map"], abs=1e-6)


def lr_factors(warmup_steps: int, total_steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = stages.training.trainer.warmup_cosine(optimizer, warmup_steps, total_steps)
    factors = []
    for _ in range(total_steps):
        factors.append(scheduler.get_last_lr()[0] / 2.0)
        optimizer.step()
        scheduler.step()
    return factors


def test_warmup_rises_linearly_then_the_cosine_decays_to_zero():
    factors = lr_factors(4, 12)
    assert factors[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # step 4 starts the cosine
    assert factors[4 + 4] == pytest.approx(0.5)  # half-way through the 8 decay steps
    assert factors[4:] == sorted(factors[4:], reverse=True) and 0 < factors[-1] < 0.05


def test_warmup_as_long_as_training_only_rises():
    assert lr_factors(4, 4) == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_no_warmup_is_a_plain_per_step_cosine():
    factors = lr_factors(0, 10)
    assert factors == pytest.approx([0.5 * (1 + math.cos(math.pi * step / 10)) for step in range(10)])


def test_unknown_arch_fails_when_the_model_is_created(project, tmp_path):
    params = project.params({"models.efficientnet_b0.arch": "no_such_net"})  # timm is not asked here
    with pytest.raises(ValueError, match="Unknown model arch 'no_such_net'"):
        stages.training.loop.train(params, "efficientnet_b0", project.prepared, project.features,
                                   paths_beside(tmp_path / "model", resume=tmp_path / "resume"))
    assert not (tmp_path / "model" / "last.pt").exists() and not (tmp_path / "resume").exists()


# ---------------------------------------------------------------------------------- resuming

def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(project, tmp_path):
    """Real interruption: SIGKILL as soon as the first last.pt is in place, then the same command."""
    epochs = 4
    overrides = {**RESUME, "train.epochs": epochs}
    params_file = project.write_params(tmp_path / "params.yaml", overrides)
    model = "efficientnet_b0"

    reference_out = tmp_path / "reference"
    run_to_end(train_command(params_file, model, project, reference_out), tmp_path)

    out = tmp_path / "interrupted"
    command = train_command(params_file, model, project, out)
    process = subprocess.Popen(command, cwd=tmp_path, env=train_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume_dir = tmp_path / "interrupted_resume"
    try:
        deadline = time.monotonic() + 240
        while not list(resume_dir.glob("*/last.pt")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert list(resume_dir.glob("*/last.pt")), "the first run wrote no resume state"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the first run finished before it could be killed"
    (state_file,) = resume_dir.glob("efficientnet_b0-*/last.pt")
    killed_after = checkpoint(state_file)["epoch"]
    assert 1 <= killed_after < epochs

    stdout = run_to_end(command, tmp_path)
    assert not state_file.exists()  # completed: the state moved to interrupted/last.pt
    resumed = stdout.split("resuming after epoch ", 1)
    assert len(resumed) == 2, f"no resume message in:\n{stdout}"
    resumed_after = int(resumed[1].split()[0])
    assert resumed_after == killed_after and f"of {epochs} from" in resumed[1]

    reference, final = checkpoint(reference_out / "last.pt"), checkpoint(out / "last.pt")
    assert final["epoch"] == reference["epoch"] == epochs
    assert curves(final["history"]) == curves(reference["history"])
    assert_same_weights(final["model"], reference["model"])
    for index, state in reference["optimizer"]["state"].items():  # Adam moments and step counts
        assert_same_weights(final["optimizer"]["state"][index], state)
    assert final["scheduler"] == reference["scheduler"]
    best_reference, best_final = checkpoint(reference_out / "best.pt"), checkpoint(out / "best.pt")
    assert (best_final["epoch"], best_final["valid_loss"]) == (best_reference["epoch"], best_reference["valid_loss"])
    assert_same_weights(best_final["model"], best_reference["model"])
    # The DVCLive curves of the resumed run are whole: replayed epochs plus the new ones.
    for metric in CURVES:
        assert read_tsv(tmp_path / "interrupted_live", metric).equals(read_tsv(tmp_path / "reference_live", metric))


@pytest.fixture(scope="module")
def unfinished_checkpoint(project, tmp_path_factory) -> Path:
    """An efficientnet_b0 run of 2 epochs with the SMALL + RESUME configuration, stopped after epoch 1:
    the folder holding model/ (with best.pt only) and resume/ (the state after epoch 1)."""
    work = tmp_path_factory.mktemp("unfinished")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run = TrainRun(monkeypatch, stop_after_epoch=1)
        assert run(project, "efficientnet_b0", work / "model", RESUME) is None
    (state,) = (work / "resume").glob("efficientnet_b0-*/last.pt")
    assert run.epochs_trained == [1] and checkpoint(state)["epoch"] == 1
    assert not (work / "model" / "last.pt").exists()
    return work


def test_same_configuration_resumes_the_unfinished_checkpoint(project, unfinished_checkpoint, tmp_path,
                                                              monkeypatch, capsys):
    shutil.copytree(unfinished_checkpoint, tmp_path, dirs_exist_ok=True)
    out = tmp_path / "model"
    run = TrainRun(monkeypatch)
    run(project, "efficientnet_b0", out, RESUME)
    assert run.resumed_epochs == [1] and run.epochs_trained == [2]
    assert not list((tmp_path / "resume").glob("*/last.pt"))  # completed: nothing left to resume
    assert "resuming after epoch 1 of 2" in capsys.readouterr().out
    assert [r["epoch"] for r in checkpoint(out / "last.pt")["history"]] == [1, 2]


def label_weight_changed(project: Project, tmp_path: Path) -> tuple[dict, Path]:
    """Same chunks, other targets: prepare re-run with another secondary label weight."""
    prepared = tmp_path / "prepared"
    project.prepare(prepared, {"data.secondary_label_weight": 0.25})
    assert (prepared / "chunks.csv").read_bytes() == (project.prepared / "chunks.csv").read_bytes()
    assert not np.array_equal(np.load(prepared / "targets.npy"), np.load(project.prepared / "targets.npy"))
    return RESUME, prepared


@pytest.mark.parametrize("change", [
    pytest.param(lambda project, tmp_path: ({**RESUME, "lr": 2e-3}, None), id="lr"),
    pytest.param(lambda project, tmp_path: ({**RESUME, "seed": 7}, None), id="seed"),
    pytest.param(lambda project, tmp_path: ({**RESUME, "train.weight_decay": 0.01}, None), id="train"),
    pytest.param(lambda project, tmp_path: ({**RESUME, "models.efficientnet_b0.lr_scale": 0.5}, None),
                 id="model"),
    pytest.param(label_weight_changed, id="data"),
])
def test_checkpoint_of_another_configuration_is_not_resumed(project, unfinished_checkpoint, tmp_path,
                                                            monkeypatch, capsys, change):
    overrides, prepared = change(project, tmp_path)
    shutil.copytree(unfinished_checkpoint, tmp_path, dirs_exist_ok=True)
    out = tmp_path / "model"
    run = TrainRun(monkeypatch)
    run(project, "efficientnet_b0", out, overrides, prepared)
    assert run.resumed_epochs == [None], "the checkpoint of another configuration was resumed"
    assert run.epochs_trained == [1, 2]  # from scratch
    assert "resuming" not in capsys.readouterr().out
    history = checkpoint(out / "last.pt")["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert read_tsv(tmp_path / "model_live", "train_loss")["step"].tolist() == [1, 2]


def test_finished_run_is_trained_again_from_scratch(project, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model"
    first = TrainRun(monkeypatch)
    first(project, "efficientnet_b0", out, RESUME)
    assert first.resumed_epochs == [None] and first.epochs_trained == [1, 2]
    finished = checkpoint(out / "last.pt")
    assert finished["epoch"] == 2
    capsys.readouterr()

    again = TrainRun(monkeypatch)
    again(project, "efficientnet_b0", out, RESUME)
    assert again.resumed_epochs == [None] and again.epochs_trained == [1, 2]
    assert "resuming" not in capsys.readouterr().out
    # From scratch with the same seed: the very same run again.
    rerun = checkpoint(out / "last.pt")
    assert curves(rerun["history"]) == curves(finished["history"])
    assert_same_weights(rerun["model"], finished["model"])
    assert read_tsv(tmp_path / "model_live", "train_loss")["step"].tolist() == [1, 2]


def test_damaged_resume_state_is_set_aside_and_training_starts_fresh(project, unfinished_checkpoint, tmp_path,
                                                                      monkeypatch, capsys):
    """The README's promise: a resume state that cannot be read (a full disk, a bad copy) does not block
    training; it is kept as last.pt.damaged and the run starts from scratch and completes."""
    shutil.copytree(unfinished_checkpoint, tmp_path, dirs_exist_ok=True)
    (state,) = (tmp_path / "resume").glob("efficientnet_b0-*/last.pt")
    first_epoch = checkpoint(state)["history"][0]
    damaged = state.read_bytes()[: state.stat().st_size // 3]  # truncated
    state.write_bytes(damaged)
    out = tmp_path / "model"
    run = TrainRun(monkeypatch)
    summary = run(project, "efficientnet_b0", out, RESUME)
    assert run.resumed_epochs == [None] and run.epochs_trained == [1, 2]
    stdout = capsys.readouterr().out
    assert "warning" in stdout and "from scratch" in stdout and "resuming" not in stdout
    assert "weights_only=False" not in stdout
    # Kept for inspection (where is the stage's business: it names the place in the warning).
    (kept,) = [path for path in tmp_path.rglob("*.damaged") if path.read_bytes() == damaged]
    assert str(kept) in stdout
    assert summary is not None and summary["epochs"] == 2
    history = checkpoint(out / "last.pt")["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    assert curves(history[:1]) == curves([first_epoch])  # epoch 1 again, as the interrupted run had it
    assert read_tsv(tmp_path / "model_live", "train_loss")["step"].tolist() == [1, 2]


def test_two_runs_with_pinned_threads_are_identical(project, tmp_path, monkeypatch):
    """train.threads, not whatever the process had before, sets the intra-op thread count (and
    deterministic kernels on the CPU): two runs of one configuration, started with 2 threads set in the
    process, both train on 1 thread (given as 1, and as auto with OMP_NUM_THREADS=1) and give bitwise the
    same weights and the same metrics. (1 thread, not 2: two spinning threads on this shared machine made
    an epoch 10x slower.)"""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    summaries = []
    for name, threads in (("first", 1), ("second", "auto")):
        torch.set_num_threads(2)
        summary = TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / name, {**RESUME, "train.threads": threads})
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert summary["cpu_threads"] == 1
        assert json.loads((tmp_path / f"{name}_live" / "metrics.json").read_text())["cpu_threads"] == 1
        summaries.append(summary)
    first, second = (checkpoint(tmp_path / name / "last.pt") for name in ("first", "second"))
    assert_same_weights(first["model"], second["model"])
    assert_same_weights(checkpoint(tmp_path / "first" / "best.pt")["model"],
                        checkpoint(tmp_path / "second" / "best.pt")["model"])
    assert curves(first["history"]) == curves(second["history"])
    for metric in CURVES:
        assert read_tsv(tmp_path / "first_live", metric).equals(read_tsv(tmp_path / "second_live", metric)), metric
    timing = ("wall_clock_seconds", "mean_epoch_seconds", "mean_train_samples_per_second", "peak_memory_mib",
              "convergence")
    assert {k: v for k, v in summaries[0].items() if k not in timing} == \
        {k: v for k, v in summaries[1].items() if k not in timing}
    conv = [{k: v for k, v in s["convergence"].items() if k != "seconds_to_within_10pct"} for s in summaries]
    assert conv[0] == conv[1]

"""The resume rule of stages/training/loop.py on real training: a real SIGKILL between two `python -m
stages.train` runs, compared bit for bit against an uninterrupted run; the cases where nothing may be
resumed (another configuration or other data, a finished run, a damaged resume state); and two runs
of one configuration with pinned CPU threads giving identical weights."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from train_project import (CURVES, RESUME, Project, TrainRun, assert_same_weights, checkpoint, curves,
                           read_tsv, run_to_end, train_command, train_env)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")


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

"""Data-parallel training on the CPU (gloo, 2 processes), as `train.processes: 2` and as `torchrun`
start it: equal to the single-process run at a global batch that does not divide evenly, identical
between the two launchers, one writer, and (slow) a SIGKILL of the launcher that leaves no rank
behind and resumes to the uninterrupted result."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_project import Project, assert_same_weights, checkpoint, run_to_end, train_command, train_env

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 18 train chunks in global batches of 5: shares of 3 and 2, and a last batch of 3 (2 + 1). No
# augmentation: each rank's masks come from its own random stream, so only then can the runs agree.
EQUAL = {"train.batch_size": 5, "train.freq_mask": 0, "train.time_mask": 0, "train.mixup_alpha": 0.0,
         "train.epochs": 2}
TOLERANCE = 1e-4  # rounding: per-rank sums are added in another order than one process's
CURVES = ("train_loss", "valid_loss", "valid_map")


class Runs:
    def __init__(self, project: Project, root: Path):
        self.project, self.root = project, root

    def command(self, name: str, model: str, processes: int, extra: dict | None = None) -> list[str]:
        params = self.project.write_params(self.root / f"{name}.yaml",
                                           {**EQUAL, "train.processes": processes, **(extra or {})})
        return train_command(params, model, self.project, self.root / name)

    def run(self, command: list[str]) -> str:
        return run_to_end(command, self.root)


@pytest.fixture(scope="module")
def runs(project, tmp_path_factory) -> Runs:
    runs = Runs(project, tmp_path_factory.mktemp("data_parallel"))
    runs.single = runs.run(runs.command("single", "ast_tiny", 1))
    runs.two = runs.run(runs.command("two", "ast_tiny", 2))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                *runs.command("torchrun", "ast_tiny", 1)[1:]]
    runs.torchrun = runs.run(torchrun)
    return runs


def history(root: Path, name: str) -> list[dict]:
    return checkpoint(root / name / "last.pt")["history"]


def max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_processes_equal_one_process_at_an_uneven_global_batch(runs):
    single, two = history(runs.root, "single"), history(runs.root, "two")
    assert len(single) == len(two) == 2
    for one, other in zip(single, two):
        for name in CURVES:
            assert abs(one[name] - other[name]) <= TOLERANCE, (name, one, other)
        assert one["lr"] == other["lr"]  # the same number of optimizer steps per epoch
    difference = max_weight_difference(checkpoint(runs.root / "single" / "last.pt")["model"],
                                       checkpoint(runs.root / "two" / "last.pt")["model"])
    assert difference <= TOLERANCE
    print(f"2 processes vs 1: max |weight difference| {difference:.2e}")


def test_torchrun_and_train_processes_give_the_same_result(runs):
    by_processes, by_torchrun = checkpoint(runs.root / "two" / "last.pt"), checkpoint(runs.root / "torchrun" / "last.pt")
    assert_same_weights(by_processes["model"], by_torchrun["model"])
    assert [[r[n] for n in CURVES] for r in by_processes["history"]] == \
        [[r[n] for n in CURVES] for r in by_torchrun["history"]]


@pytest.mark.parametrize("name", ["two", "torchrun"])
def test_only_rank_0_writes_and_reports(runs, name):
    stdout = getattr(runs, name)
    for epoch in (1, 2):
        assert stdout.count(f"train@ast_tiny epoch {epoch}/2: train loss") == 1, stdout
    assert stdout.count("train@ast_tiny: min valid loss") == 1 and "2 processes" in stdout
    assert sorted(p.name for p in (runs.root / name).iterdir()) == ["best.pt", "last.pt"]
    live = runs.root / f"{name}_live"
    assert sorted(p.relative_to(live).as_posix() for p in live.rglob("*")) == \
        sorted(p.relative_to(runs.root / "single_live").as_posix() for p in (runs.root / "single_live").rglob("*"))
    assert not any((runs.root / f"{name}_resume").glob("*/*"))  # the resume state moved to last.pt


def test_batchnorm_models_train_on_two_cpu_processes(runs):
    """EfficientNet's BatchNorm: statistics per rank's share in training, running averages made equal
    across ranks before validation (so rank 0 saves the model every rank validated)."""
    runs.run(runs.command("cnn", "efficientnet_b0", 2, {"train.epochs": 1}))
    (record,) = history(runs.root, "cnn")
    assert all(torch.isfinite(torch.tensor(record[n])) for n in CURVES)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_sigkill_of_dvcs_place_leaves_no_rank_behind_and_resumes_to_the_same_result(runs):
    """The launcher runs under a shell that stands for `dvc`: SIGKILL the shell mid-run, and the
    launcher and both ranks must end; the same command then resumes to the uninterrupted result."""
    overrides = {"train.epochs": 3, "train.time_mask": 10}
    runs.run(runs.command("kill_reference", "ast_tiny", 2, overrides))
    command = runs.command("killed", "ast_tiny", 2, overrides)
    parent = subprocess.Popen(["bash", "-c", shlex.join(command) + "; exit $?"], cwd=runs.root, env=train_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not list((runs.root / "killed_resume").glob("*/last.pt")) and parent.poll() is None:
            assert time.monotonic() < deadline, "no resume state after 600 s"
            time.sleep(0.01)
        launchers = children(parent.pid)
        ranks = [rank for launcher in launchers for rank in children(launcher)]
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
    finally:
        parent.kill()
    assert parent.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(launchers) == 1 and len(ranks) >= 2, (launchers, ranks)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in launchers + ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in launchers + ranks if alive(pid)], "processes outlived the killed parent"

    stdout = runs.run(command)
    assert "resuming after epoch" in stdout
    assert_same_weights(checkpoint(runs.root / "killed" / "last.pt")["model"],
                        checkpoint(runs.root / "kill_reference" / "last.pt")["model"])
    timing = ("epoch_seconds", "train_samples_per_second")
    strip = lambda records: [{k: v for k, v in r.items() if k not in timing} for r in records]  # noqa: E731
    assert strip(history(runs.root, "killed")) == strip(history(runs.root, "kill_reference"))

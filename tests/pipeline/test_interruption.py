"""Interrupted stages, the way a user interrupts them: `dvc repro` started in its own process group,
then SIGKILL to the whole group (a crash, an OOM kill, a lost machine) or SIGINT to the whole group
(Ctrl-C in the terminal), half-way through the stage's work.

- featurize: no half-written output is ever accepted (data/features absent, or the previous
  complete version when the stage is run by hand), `dvc status` says featurize must run, and the
  next `dvc repro` writes features byte-for-byte identical to an uninterrupted run's.
- train@<model>, killed in the middle of an epoch after at least one completed: the next
  `dvc repro` resumes after the last completed epoch (not from epoch 1), and the checkpoints, the
  training summary and curves (timings aside) and the evaluation equal those of an uninterrupted
  run of the same configuration in another repository.

Each test builds its own throw-away repository (tests/conftest.py's project_repo); minutes in all,
hence `slow` (`make test-slow`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from helpers import TIMING_KEY, TINY_DEMO, project_repo, tree_hashes, without_timing

pytestmark = pytest.mark.slow

SIGNALS = [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGINT, id="SIGINT")]

# featurize: the tiny demo's species with 30 recordings each (92 files, ~1400 s of audio), so that
# featurize's loop runs for a second or two and can be caught half-way; two decoding workers, as
# by default. No training in these tests.
FEATURIZE = {
    **TINY_DEMO,
    "demo.recordings_per_species": 30,
    "demo.max_recording_seconds": 30.0,
    "features.device": "cpu",
    "features.workers": 2,
}
# train: the tiny demo in 5 s chunks, 3 epochs of batches of 2 (a few batches of ~0.5 s each per
# epoch on the CPU), with every source of training randomness switched on: shuffling, SpecAugment
# (on by default), mixup and dropout.
MODEL = "efficientnet_b0"  # the fastest model on the CPU
EPOCHS = 3
TRAIN = {
    **TINY_DEMO,
    "demo.recordings_per_species": 4,
    "features.device": "cpu",
    "features.workers": 0,
    "train.epochs": EPOCHS,
    "train.batch_size": 2,
    "train.device": "cpu",
    "train.mixup_alpha": 0.4,
    f"models.{MODEL}.options": {"drop_rate": 0.3},
}
POLL_SECONDS = 0.01


# ---------------------------------------------------------------------------------------- helpers

def start(project: SimpleNamespace, log_dir: Path, *args: str) -> SimpleNamespace:
    """`args` started in a new session (its own process group, as a terminal's foreground job),
    stdout and stderr to files that the test polls."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(args, cwd=project.repo, env=project.env, stdout=out, stderr=err,
                                start_new_session=True)
    return SimpleNamespace(proc=proc, stdout=stdout, stderr=stderr, args=args,
                           output=lambda: stdout.read_text(errors="replace") + stderr.read_text(errors="replace"))


def wait_until(job: SimpleNamespace, ready, what: str, timeout: float = 240.0) -> float:
    """Poll until `ready()`; fail (after killing the job) if the job ends first or time runs out.
    Returns the seconds waited."""
    started = time.monotonic()
    while not ready():
        if job.proc.poll() is not None or time.monotonic() - started > timeout:
            stop_group(job, signal.SIGKILL)
            pytest.fail(f"{' '.join(job.args)}: {'ended' if job.proc.returncode is not None else 'timed out'} "
                        f"before {what} (rc {job.proc.returncode}):\n{job.output()[-4000:]}")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def stop_group(job: SimpleNamespace, sig: signal.Signals, timeout: float = 120.0) -> bool:
    """Send `sig` to the job's whole process group; wait for the leader and for the group to be
    empty. Returns whether the group ended by itself (else it is SIGKILLed)."""
    try:
        os.killpg(job.proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        job.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(job.proc.pid, 0)  # any process of the group left?
        except ProcessLookupError:
            return job.proc.returncode is not None
        time.sleep(0.1)
    os.killpg(job.proc.pid, signal.SIGKILL)
    job.proc.wait()
    return False


def last_progress(text: str, desc: str) -> tuple[int, int] | None:
    """(done, total) of the last tqdm update of the bar named `desc` in `text`."""
    found = re.findall(re.escape(desc) + r":\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)", text)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def half_way(job: SimpleNamespace, desc: str):
    """A `ready` test: the bar `desc` has done some of its work but not all."""
    def ready() -> bool:
        progress = last_progress(job.stderr.read_text(errors="replace"), desc)
        return progress is not None and 0 < progress[0] < progress[1]
    return ready


def lock_stages(repo: Path) -> set[str]:
    path = repo / "dvc.lock"
    return set(yaml.safe_load(path.read_text())["stages"]) if path.exists() else set()


def status(project: SimpleNamespace, *targets: str) -> dict:
    return json.loads(project.run("dvc", "status", "--json", *targets).stdout or "{}")


def curves(live_dir: Path) -> dict[str, list[list[str]]]:
    """DVCLive's per-epoch series (timing series and the timestamp column left out)."""
    series = {}
    for path in sorted((live_dir / "plots" / "metrics").glob("*.tsv")):
        if TIMING_KEY.search(path.stem):
            continue
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if name != "timestamp"]
        series[path.stem] = [[row[i] for i in keep] for row in rows]
    return series


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys(), what
    differing = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not differing, f"{what}: {len(differing)}/{len(expected)} tensors differ, e.g. {differing[:5]}"


def train_results(repo: Path) -> SimpleNamespace:
    best, last = load(repo / "models" / MODEL / "best.pt"), load(repo / "models" / MODEL / "last.pt")
    return SimpleNamespace(
        best=best, last=last,
        summary=json.loads((repo / "reports" / "train" / MODEL / "metrics.json").read_text()),
        curves=curves(repo / "reports" / "train" / MODEL),
        evaluation=json.loads((repo / "reports" / "eval" / MODEL / "metrics.json").read_text()))


# -------------------------------------------------------------------------------------- featurize

@pytest.fixture(scope="module")
def featurize_reference(tmp_path_factory) -> dict[str, str]:
    """sha256 of every file of data/features from an uninterrupted `dvc repro featurize`."""
    project = project_repo(tmp_path_factory, FEATURIZE)
    project.run("dvc", "repro", "featurize")
    return tree_hashes(project.repo / "data" / "features")


@pytest.mark.parametrize("sig", SIGNALS)
def test_featurize_interrupted_half_way_leaves_no_output_and_reruns_identically(
        sig, featurize_reference, tmp_path_factory, tmp_path):
    started = time.monotonic()
    project = project_repo(tmp_path_factory, FEATURIZE)
    repo = project.repo
    project.run("dvc", "repro", "prepare")
    def temporaries() -> list[Path]:  # stages/core/atomic.py names them .features.tmp-<pid>
        return list((repo / "data").glob(".features.tmp-*"))

    job = start(project, tmp_path / "first", "dvc", "repro", "featurize")
    waited = wait_until(job, lambda: any((tmp / "features.npy").exists() for tmp in temporaries())
                        and half_way(job, "featurize")(), "featurize wrote part of its features")
    progress = last_progress(job.stderr.read_text(errors="replace"), "featurize")
    ended = stop_group(job, sig)
    output = job.output()
    print(f"\n{sig.name} after {waited:.1f} s, featurize at {progress[0]}/{progress[1]} files; "
          f"dvc exited {job.proc.returncode}; temporaries left: {[tmp.name for tmp in temporaries()]}")
    assert ended, f"the process group outlived {sig.name}"
    assert job.proc.returncode != 0, output[-3000:]
    assert not re.search(r"^featurize: \d+/\d+ chunks", job.stdout.read_text(), flags=re.M), \
        "featurize finished before the signal"

    # Nothing half-written is accepted: no data/features, no report, no dvc.lock entry, and DVC
    # says featurize has to run.
    assert not (repo / "data" / "features").exists()
    assert not (repo / "reports" / "featurize_report.json").exists()
    assert "featurize" not in lock_stages(repo)
    assert "featurize" in status(project, "featurize")
    if sig == signal.SIGINT:  # an exception unwinds stages/core/atomic.py, which removes its temporary
        assert not temporaries()

    # The next `dvc repro` completes, with the uninterrupted run's very bytes.
    rerun = project.run("dvc", "repro", "featurize")
    assert "Running stage 'featurize'" in rerun.stdout
    assert tree_hashes(repo / "data" / "features") == featurize_reference
    assert not temporaries()  # a SIGKILLed run's temporary is removed by the next run
    assert status(project, "featurize") == {}

    # The stage run by hand over complete features and interrupted: they stay the previous complete
    # version (atomic replacement), and DVC still finds them up to date.
    job = start(project, tmp_path / "by_hand", "python", "-m", "stages.featurize", "--params", "params.yaml",
                "--chunks", "data/prepared/chunks.csv", "--out", "data/features",
                "--report", "reports/featurize_report.json")
    wait_until(job, half_way(job, "featurize"), "featurize (run by hand) wrote part of its features")
    assert stop_group(job, sig)
    assert job.proc.returncode != 0
    assert tree_hashes(repo / "data" / "features") == featurize_reference
    assert status(project, "featurize") == {}
    print(f"{sig.name}: test took {time.monotonic() - started:.0f} s")


# ------------------------------------------------------------------------------------------ train

@pytest.fixture(scope="module")
def train_reference(tmp_path_factory) -> SimpleNamespace:
    """Checkpoints, summaries and curves of an uninterrupted `dvc repro evaluate@MODEL`."""
    project = project_repo(tmp_path_factory, TRAIN)
    project.run("dvc", "repro", f"evaluate@{MODEL}")
    return SimpleNamespace(results=train_results(project.repo),
                           features=tree_hashes(project.repo / "data" / "features"))


@pytest.mark.parametrize("sig", SIGNALS)
def test_train_interrupted_mid_epoch_resumes_to_the_uninterrupted_result(
        sig, train_reference, tmp_path_factory, tmp_path):
    started = time.monotonic()
    project = project_repo(tmp_path_factory, TRAIN)
    repo = project.repo
    project.run("dvc", "repro", "featurize")
    assert tree_hashes(repo / "data" / "features") == train_reference.features  # same inputs

    # Killed during epoch 2: epoch 1 is complete (its line printed, its state saved), some batches
    # of epoch 2 are done.
    job = start(project, tmp_path / "first", "dvc", "repro", f"train@{MODEL}")
    epoch_2 = f"train@{MODEL} epoch 2/{EPOCHS}"
    waited = wait_until(job, lambda: f"train@{MODEL} epoch 1/{EPOCHS}: train loss" in job.stdout.read_text()
                        and half_way(job, epoch_2)(), "training was half-way through epoch 2")
    progress = last_progress(job.stderr.read_text(errors="replace"), epoch_2)
    ended = stop_group(job, sig)
    output = job.output()
    print(f"\n{sig.name} after {waited:.1f} s, epoch 2 at batch {progress[0]}/{progress[1]}; "
          f"dvc exited {job.proc.returncode}")
    assert ended, f"the process group outlived {sig.name}"
    assert job.proc.returncode != 0, output[-3000:]
    assert f"epoch 2/{EPOCHS}: train loss" not in job.stdout.read_text(), "epoch 2 ended before the signal"

    # The resume state holds epoch 1; nothing of the run is accepted as the stage's result.
    (state_path,) = (repo / ".resume").glob(f"{MODEL}-*/last.pt")
    state = load(state_path)
    assert state["epoch"] == 1 and [record["epoch"] for record in state["history"]] == [1]
    assert f"train@{MODEL}" not in lock_stages(repo)
    assert f"train@{MODEL}" in status(project, f"train@{MODEL}")

    # The next `dvc repro` resumes after epoch 1 and trains epochs 2 and 3 only.
    rerun = project.run("dvc", "repro", f"evaluate@{MODEL}")
    rerun_output = rerun.stdout + rerun.stderr
    assert f"train@{MODEL}: resuming after epoch 1 of {EPOCHS}" in rerun.stdout, rerun_output[-3000:]
    trained = re.findall(rf"train@{re.escape(MODEL)} epoch (\d+)/{EPOCHS}: train loss", rerun.stdout)
    assert trained == ["2", "3"], rerun.stdout[-3000:]
    assert not list((repo / ".resume").glob(f"{MODEL}-*")), "the resume state outlived the run"
    assert status(project, f"evaluate@{MODEL}") == {}

    # ... and ends exactly where the uninterrupted run ended.
    got, expected = train_results(repo), train_reference.results
    assert_same_tensors(got.best["model"], expected.best["model"], "best.pt weights")
    assert (got.best["epoch"], got.best["valid_loss"]) == (expected.best["epoch"], expected.best["valid_loss"])
    assert_same_tensors(got.last["model"], expected.last["model"], "last.pt weights")
    assert got.last["epoch"] == expected.last["epoch"] == EPOCHS
    history = [without_timing(record) for record in got.last["history"]]
    assert history == [without_timing(record) for record in expected.last["history"]]
    assert without_timing(got.summary) == without_timing(expected.summary)
    assert got.curves == expected.curves
    assert without_timing(got.evaluation) == without_timing(expected.evaluation)
    print(f"{sig.name}: resumed after epoch 1; results equal the uninterrupted run's; "
          f"test took {time.monotonic() - started:.0f} s")

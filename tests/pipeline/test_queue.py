"""Two experiments queued with `dvc exp run --queue -S lr=...` and run side by side by
`dvc queue start -j 2` (each in its own temporary copy under .dvc/tmp/exps, by its own worker).

Both must finish, each with its own parameters and results: the results of the two differ, are
finite, and the first one's equal those of a plain `dvc exp run -S lr=...` of the same value in
the workspace (the run-cache emptied first, so that it really trains). The workers inherit the
environment of `dvc queue start`: with OMP_NUM_THREADS=1 (what the README tells users to set for
`-j 2` on a 2-core machine; tests/conftest.py's project_repo sets it), every training run uses one
CPU thread.

Minutes of training, hence `slow` (`make test-slow`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time

import pytest

from helpers import PIPELINE_SMALL, project_repo, without_timing

pytestmark = pytest.mark.slow

MODELS = ("efficientnet_b0", "ast_tiny")
EXPERIMENTS = {"lr-high": 1e-3, "lr-low": 1e-4}  # name -> lr; the baseline's is 5e-4
QUEUE_TIMEOUT_SECONDS = 900
POLL_SECONDS = 5


def queue_statuses(project) -> dict[str, str]:
    """name -> status (Queued, Running, Success, Failed, ...) from `dvc queue status`."""
    table = project.run("dvc", "queue", "status").stdout
    return dict(re.findall(r"^\S+\s+(\S+)\s+.*?\s(\w+)\s*$", table.split("\n\n")[0], flags=re.M)[1:])


def queue_logs(project, names) -> str:
    return "\n".join(f"----- dvc queue logs {name}\n" + project.run("dvc", "queue", "logs", name, check=False).stdout
                     for name in names)


def read_at(project, rev: str, path: str) -> dict:
    """A JSON file as experiment `rev` left it (its outputs are in DVC's cache, not in git)."""
    code = f"import dvc.api, sys; sys.stdout.write(dvc.api.read({path!r}, rev={rev!r}))"
    return json.loads(project.run("python", "-c", code).stdout)


def test_queue_start_j2_runs_two_experiments_to_their_own_results(tmp_path_factory):
    project = project_repo(tmp_path_factory, PIPELINE_SMALL)
    run, repo = project.run, project.repo
    assert project.env["OMP_NUM_THREADS"] == "1"
    # The queue runs experiments from commits: the data stages' results committed in dvc.lock
    # (their outputs in the cache), as after any `dvc repro` + `git commit`.
    run("dvc", "repro", "featurize")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "data stages: dvc repro featurize")
    for name, lr in EXPERIMENTS.items():
        run("dvc", "exp", "run", "--queue", "-S", f"lr={lr}", "-n", name)
    assert queue_statuses(project) == {name: "Queued" for name in EXPERIMENTS}

    started = time.monotonic()
    run("dvc", "queue", "start", "-j", "2")
    statuses = {}
    while time.monotonic() - started < QUEUE_TIMEOUT_SECONDS:
        time.sleep(POLL_SECONDS)
        statuses = queue_statuses(project)
        if not set(statuses.values()) & {"Queued", "Running"}:
            break
    queue_seconds = time.monotonic() - started
    logs = queue_logs(project, EXPERIMENTS)
    if set(statuses.values()) & {"Queued", "Running"}:
        run("dvc", "queue", "kill", *EXPERIMENTS, check=False)
        run("dvc", "queue", "stop", "--kill", check=False)
    assert statuses == {name: "Success" for name in EXPERIMENTS}, f"after {queue_seconds:.0f} s: {statuses}\n{logs}"
    print(f"\n`dvc queue start -j 2`: both experiments done in {queue_seconds:.0f} s "
          f"(polled every {POLL_SECONDS} s)")

    # Both listed by `dvc exp show`, each with its lr and its own, finite scores.
    shown = json.loads(run("dvc", "exp", "show", "--json").stdout)
    head = run("git", "rev-parse", "HEAD").stdout.strip()
    baseline = next(entry for entry in shown if entry["rev"] == head)
    experiments = {rev["name"]: rev for group in baseline["experiments"] or [] for rev in group["revs"]}
    assert set(experiments) == set(EXPERIMENTS)
    scores = {}
    for name, lr in EXPERIMENTS.items():
        data = experiments[name]["data"]
        assert float(data["params"]["params.yaml"]["data"]["lr"]) == lr
        scores[name] = data["metrics"]["reports/scores.json"]["data"]
        assert set(scores[name]) == set(MODELS), name
        for model in MODELS:
            for key in ("mAP", "F1", "loss"):
                assert math.isfinite(scores[name][model][key]), (name, model, key)
    print("scores:", json.dumps(scores))
    for model in MODELS:  # another lr trains other weights
        assert scores["lr-high"][model]["loss"] != scores["lr-low"][model]["loss"], model

    # The workers ran with the environment of `dvc queue start`: one torch thread per run.
    threads = re.findall(r"\((\d+) CPU threads?\)", logs)
    summaries = {(name, model): read_at(project, name, f"reports/train/{model}/metrics.json")
                 for name in EXPERIMENTS for model in MODELS}
    recorded = {key: summary["cpu_threads"] for key, summary in summaries.items() if "cpu_threads" in summary}
    print(f"CPU threads per training run: from the logs {threads}, from the summaries {recorded}")
    if threads or recorded:  # else the train stage does not record them (yet): nothing to check
        assert set(threads) <= {"1"} and set(recorded.values()) <= {1}

    # A plain `dvc exp run` of the first lr in the workspace trains to the very same results. The
    # run-cache is emptied first: the queue's runs filled it, and DVC would otherwise restore them.
    shutil.rmtree(repo / ".dvc" / "cache" / "runs")
    name, lr = next(iter(EXPERIMENTS.items()))
    started = time.monotonic()
    plain = run("dvc", "exp", "run", "-S", f"lr={lr}")
    plain_seconds = time.monotonic() - started
    assert all(f"Running stage 'train@{model}'" in plain.stdout for model in MODELS), plain.stdout[-3000:]
    print(f"plain `dvc exp run -S lr={lr}`: {plain_seconds:.0f} s (one experiment, alone)")
    assert json.loads((repo / "reports" / "scores.json").read_text()) == scores[name]
    for model in MODELS:
        evaluation = json.loads((repo / "reports" / "eval" / model / "metrics.json").read_text())
        assert without_timing(evaluation) == without_timing(read_at(project, name, f"reports/eval/{model}/metrics.json"))
        summary = json.loads((repo / "reports" / "train" / model / "metrics.json").read_text())
        assert without_timing(summary) == without_timing(summaries[name, model])

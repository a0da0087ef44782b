"""The whole pipeline and a DVC experiment, end to end, in a throw-away git repository holding a copy
of the project (stages/, dvc.yaml, .dvcignore, .gitignore, .dvc/config) and a tiny params.yaml.

`dvc repro` builds everything; after a commit, `dvc exp run -S lr=1e-4` must re-run only the
training, evaluation and report stages, and `dvc metrics diff`, `dvc exp show` and `dvc plots diff`
must show the experiment against the commit for both models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from helpers import PIPELINE_SMALL, PLAIN_RECIPE, project_repo, ran_stages, raw_params, write_params
from subprocesses import run_subprocess
from stages.core.params import load_params

pytestmark = pytest.mark.repro

MODELS = ("efficientnet_b0", "ast_tiny")  # the models dvc.yaml's metrics and plots name
DATA_STAGES = ("demo_data", "prepare", "featurize", "background", "spectrograms")
MODEL_STAGES = tuple(f"{stage}@{model}" for stage in ("train", "evaluate", "export", "predict") for model in MODELS)
BASE_LR, EXP_LR = 5e-4, 1e-4
# The README's `dvc exp show` command (its arguments), checked to fit 120 columns.
README_EXP_SHOW = ("--no-pager", "--drop", ".*", "--keep", r"^(Experiment|(params\.yaml:)?lr|.*\.(mAP|F1))$")


def stage_lines(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if re.match(r"(Running stage '|Stage '.*' didn't change)", line)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_repo(tmp_path_factory, PIPELINE_SMALL)


@pytest.fixture(scope="module")
def experiment(project):
    run = project.run
    repro = run("dvc", "repro")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "baseline: dvc repro")
    baseline = {model: json.loads((project.repo / "reports" / "eval" / model / "metrics.json").read_text())
                for model in MODELS}
    exp = run("dvc", "exp", "run", "-S", "lr=1e-4")
    return SimpleNamespace(repro=repro.stdout + repro.stderr, exp=exp.stdout + exp.stderr,
                           baseline=baseline)


def test_repro_runs_the_whole_pipeline(project, experiment):
    ran = ran_stages(experiment.repro)
    assert sorted(ran) == sorted([*DATA_STAGES, *MODEL_STAGES, "report"])
    position = {stage: i for i, stage in enumerate(ran)}
    for model in MODELS:
        assert position["featurize"] < position[f"train@{model}"] < position[f"evaluate@{model}"]
        assert position[f"evaluate@{model}"] < position["report"]
        assert position[f"evaluate@{model}"] < position[f"export@{model}"] < position[f"predict@{model}"]
    lock = yaml.safe_load(project.run("git", "show", "HEAD:dvc.lock").stdout)
    assert set(lock["stages"]) == {*DATA_STAGES, *MODEL_STAGES, "report"}
    for model in MODELS:
        assert experiment.baseline[model]["soundscape"]["threshold"] in raw_params()["evaluate"]["threshold_grid"]
        assert set(experiment.baseline[model]["baselines"]) == {"all_nocall", "class_prior"}
    # The report stage's outputs are committed to git (cache: false), one column/row per model;
    # training and evaluation outputs live in DVC's cache (so that the run-cache can serve them).
    committed = project.run("git", "ls-files", "reports").stdout.split()
    for path in ("reports/summary.md", "reports/comparison.csv", "reports/loss_curves.png",
                 "reports/per_class_ap.png", "reports/spectrograms.png",
                 "reports/scores.json", "reports/soundscape.json", "reports/timing.json",
                 *(f"reports/{kind}/{model}.{ext}" for model in MODELS for kind, ext in (
                     ("curves", "csv"), ("per_class_ap", "csv"), ("precision_recall", "json")))):
        assert path in committed, path
    assert not [path for path in committed if path.startswith(("reports/train/", "reports/eval/"))
                and not path.endswith(".gitignore")]
    for model in MODELS:
        assert (project.repo / "reports" / "eval" / model / "submission.csv").exists()
        # The route to answers: the bundle completed, its ONNX copy, a submission for the unlabelled soundscape.
        assert {"best.pt", "card.json", "model.onnx", "export.json"} <= {
            path.name for path in (project.repo / "models" / model).iterdir()}
        submission = pd.read_csv(project.repo / "reports" / "predict" / model / "submission.csv")
        assert submission["row_id"].tolist() == [f"50000_COR_{end}" for end in (5, 10, 15, 20)]
    assert list(pd.read_csv(project.repo / "reports" / "comparison.csv")["model"]) == list(MODELS)
    assert (project.repo / "reports" / "loss_curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_exp_run_reruns_only_training_and_what_follows(project, experiment):
    print("\n`dvc exp run -S lr=1e-4` stage lines:\n" + "\n".join(stage_lines(experiment.exp)))
    ran = ran_stages(experiment.exp)
    assert sorted(ran) == sorted([*MODEL_STAGES, "report"])
    assert not set(ran) & set(DATA_STAGES)
    for stage in DATA_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in experiment.exp
    assert "Experiment results have been applied to your workspace" in experiment.exp

    # DVC writes `lr: 0.0001` into the workspace's params.yaml; the stages read it back as 1e-4.
    repo = project.repo
    assert float(yaml.safe_load((repo / "params.yaml").read_text())["lr"]) == EXP_LR
    params = load_params(repo / "params.yaml")
    assert params.lr == EXP_LR
    for model in MODELS:
        summary = json.loads((repo / "reports" / "train" / model / "metrics.json").read_text())
        assert summary["effective_lr"] == pytest.approx(params.effective_lr(model))
        assert summary["epochs"] == 2
    comparison = pd.read_csv(repo / "reports" / "comparison.csv").set_index("model")
    for model in MODELS:
        assert comparison.loc[model, "effective_lr"] == pytest.approx(params.effective_lr(model))
    assert params.effective_lr(MODELS[0]) != params.effective_lr(MODELS[1])


def test_metrics_diff_shows_both_models(project, experiment):
    print("\n`dvc metrics diff --md`:\n" + project.run("dvc", "metrics", "diff", "--md").stdout)
    diff = json.loads(project.run("dvc", "metrics", "diff", "--json").stdout)
    assert set(diff) <= {"reports/scores.json", "reports/soundscape.json", "reports/timing.json"}  # headline figures
    for model in MODELS:
        loss = diff["reports/scores.json"][f"{model}.loss"]  # another lr trains other weights
        assert loss["old"] == pytest.approx(experiment.baseline[model]["valid"]["bce_loss"], rel=1e-3)
        assert loss["new"] != loss["old"]
        assert loss["diff"] == pytest.approx(loss["new"] - loss["old"])
        for name, change in diff["reports/scores.json"].items():
            assert change["new"] != change["old"], name  # only what changed is listed
        assert f"{model}.params" not in diff["reports/scores.json"]  # same model: same count


def test_exp_show_has_lr_and_the_headline_metrics_in_120_columns(project, experiment):
    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    head = project.run("git", "rev-parse", "HEAD").stdout.strip()

    def lr_and_scores(data: dict) -> tuple[float, dict]:
        return float(data["params"]["params.yaml"]["data"]["lr"]), data["metrics"]["reports/scores.json"]["data"]

    baseline = next(entry for entry in shown if entry["rev"] == head)
    lr, scores = lr_and_scores(baseline["data"])
    assert lr == BASE_LR and set(scores) == set(MODELS)
    experiments = [rev for group in baseline["experiments"] or [] for rev in group["revs"]]
    assert len(experiments) == 1 and experiments[0]["name"]
    lr, exp_scores = lr_and_scores(experiments[0]["data"])
    assert lr == EXP_LR and exp_scores != scores
    # The README's command: everything a reader compares, in a 120-column terminal.
    table = project.run("dvc", "exp", "show", *README_EXP_SHOW, env_update={"COLUMNS": "120"}).stdout
    print("\n" + table)
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = " ".join(lines[:4])
    assert "lr" in header and "…" not in header
    for model in MODELS:
        for name in ("mAP", "F1"):
            assert f"{model}.{name}" in header, (model, name)


def test_plots_diff_draws_one_loss_plot_per_model_with_1_based_epochs(project, experiment):
    plots = json.loads(project.run("dvc", "plots", "diff", "--json").stdout)["data"]
    for model in MODELS:
        (plot,) = plots[f"reports/curves/{model}.csv"]
        assert set(plot["revisions"]) == {"workspace", "HEAD"}
        values = plot["content"]["data"]["values"]
        table = pd.read_csv(project.repo / "reports" / "curves" / f"{model}.csv")
        for loss in ("train_loss", "valid_loss"):
            points = {rev: [(int(v["epoch"]), float(v[loss])) for v in values if v["rev"] == rev]
                      for rev in ("workspace", "HEAD")}
            assert sorted(set(points["workspace"])) == list(zip(table["epoch"], table[loss])), (model, loss)
            assert sorted({epoch for epoch, _ in points["HEAD"]}) == [1, 2], (model, loss)
        for kind in ("precision_recall", "per_class_ap"):
            assert f"reports/{kind}/{model}.{'json' if kind == 'precision_recall' else 'csv'}" in plots
    assert "dvc_plots" in (project.repo / ".gitignore").read_text()


def test_going_back_to_a_configuration_run_before_is_restored_from_the_run_cache(project, experiment):
    """`dvc exp run -S lr=5e-4` after the 1e-4 experiment: the committed configuration, served from
    DVC's run-cache (no training), with the committed results."""
    started = time.monotonic()
    back = project.run("dvc", "exp", "run", "-S", "lr=5e-4")
    seconds = time.monotonic() - started
    output = back.stdout + back.stderr
    print(f"\n`dvc exp run -S lr=5e-4` took {seconds:.1f} s:\n" + "\n".join(
        line for line in output.splitlines() if "stage" in line.lower()))
    assert ran_stages(output) == ["report"], "a stage ran instead of being restored"  # report: seconds
    for model in MODELS:
        assert f"Stage 'train@{model}' is cached - skipping run, checking out outputs" in output
    diff = json.loads(project.run("dvc", "metrics", "diff", "HEAD", "--targets", "reports/scores.json",
                                  "--json").stdout)
    assert diff == {}  # the very results of the committed run


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="stages/training/loop.py: DVCLive's Live() raises SCMError('Empty git repo') in a "
                          "DVC project whose git repository has no commit yet")
def test_train_needs_a_commit_in_a_fresh_git_repository(project, experiment, tmp_path):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copytree(project.repo / "stages", fresh / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(project.repo / "data" / "prepared", fresh / "data" / "prepared")
    shutil.copytree(project.repo / "data" / "features", fresh / "data" / "features")
    write_params(fresh / "params.yaml", {**PIPELINE_SMALL, **PLAIN_RECIPE, "train.epochs": 1})
    for args in (("git", "init", "-q"), ("dvc", "init", "-q")):
        subprocess.run(args, cwd=fresh, env=project.env, check=True, capture_output=True)
    result = run_subprocess(
        ["python", "-m", "stages.train", "--params", "params.yaml", "--model", "efficientnet_b0",
         "--prepared", "data/prepared", "--features", "data/features", "--out", "models/efficientnet_b0",
         "--live", "reports/train/efficientnet_b0", "--resume-dir", ".resume"],
        cwd=fresh, env=project.env, capture_output=True, text=True)
    if result.returncode != 0 and "Empty git repo" not in result.stderr:
        pytest.fail(f"train failed for another reason:\n{result.stderr[-2000:]}")  # not the known bug
    assert result.returncode == 0, result.stderr[-2000:]

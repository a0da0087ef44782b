"""Fixtures of the training tests: the prepared and featurized tiny demo (built once per module),
and a scratch working directory for in-process training runs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import stages.background
import stages.featurize
from train_project import Project, run_main


@pytest.fixture(scope="module")
def outside_the_repo(tmp_path_factory):
    """In-process training runs from a scratch folder: DVCLive looks for a DVC/Git repository in
    the working directory, and the project's own one is not this test's business."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(scope="module")
def project(demo_root, tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("train_project"), demo_root)
    params_file = project.write_params(project.root / "params.yaml")
    project.prepare(project.prepared)
    run_main(stages.featurize.main, "--params", params_file, "--chunks", project.prepared / "chunks.csv",
             "--out", project.features, "--report", project.root / "featurize_report.json")
    run_main(stages.background.main, "--params", params_file, "--out", project.background,
             "--report", project.root / "background_report.json")
    stats = json.loads((project.features / "stats.json").read_text())
    assert stats["shape"][1:] == [128, 101]
    splits = pd.read_csv(project.prepared / "chunks.csv")["split"].value_counts()
    assert splits["train"] >= 12 and splits["valid"] >= 4, splits.to_dict()
    return project

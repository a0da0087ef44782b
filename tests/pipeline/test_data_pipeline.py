"""The data stages under real `dvc repro`, in a throw-away git repository holding a copy of the
project's code, dvc.yaml and a tiny params.yaml."""


import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import TINY_DEMO, project_repo, ran_stages, tree_hashes

pytestmark = pytest.mark.repro

DATA_STAGES = ("demo_data", "prepare", "featurize")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project in a throw-away repository; `run` returns what a command printed."""
    repo = project_repo(tmp_path_factory, TINY_DEMO)

    def run(*args):
        result = repo.run(*args)
        return result.stdout + result.stderr

    return repo.repo, run


def outputs(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != ".gitignore")  # dvc writes .gitignore


@pytest.fixture(scope="module")
def first_repro(project):
    repo, run = project
    return run("dvc", "repro", "featurize")


def test_repro_builds_the_data_stages(project, first_repro):
    repo, _ = project
    assert ran_stages(first_repro) == list(DATA_STAGES)
    assert outputs(repo / "data" / "prepared") == ["chunks.csv", "classes.txt", "labels.csv", "targets.npy"]
    assert outputs(repo / "data" / "features") == ["features.npy", "index.csv", "stats.json"]
    assert (repo / "reports" / "data_report.json").is_file()
    assert (repo / "reports" / "featurize_report.json").is_file()
    chunks = pd.read_csv(repo / "data" / "prepared" / "chunks.csv")
    features = np.load(repo / "data" / "features" / "features.npy", mmap_mode="r")
    assert features.shape == (len(chunks), 128, 501)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(DATA_STAGES)
    assert not list(repo.rglob(".*.tmp*"))


def test_second_repro_runs_nothing(project, first_repro):
    _, run = project
    output = run("dvc", "repro", "featurize")
    assert ran_stages(output) == []
    assert "didn't change" in output or "up to date" in output
    status = run("dvc", "status", "--with-deps", "featurize")
    assert "Data and pipelines are up to date" in status


def test_label_weight_change_reruns_prepare_only(project, first_repro):
    repo, run = project
    before = tree_hashes(repo / "data")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["secondary_label_weight"] = 0.8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    output = run("dvc", "repro", "featurize")
    assert ran_stages(output) == ["prepare"]
    after = tree_hashes(repo / "data")
    assert after["prepared/chunks.csv"] == before["prepared/chunks.csv"]
    assert after["prepared/targets.npy"] != before["prepared/targets.npy"]
    unchanged = [name for name in before if name.startswith(("demo/", "features/"))]
    assert unchanged and all(after[name] == before[name] for name in unchanged)
    assert np.isclose(np.load(repo / "data" / "prepared" / "targets.npy"), 0.8).any()
    assert "Data and pipelines are up to date" in run("dvc", "status", "--with-deps", "featurize")

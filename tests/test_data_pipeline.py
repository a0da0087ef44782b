"""The data stages under real `dvc repro`, in a throw-away git repository holding a copy of the
project's code, dvc.yaml and a tiny params.yaml."""

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, TINY_DEMO, subprocess_env, tree_hashes, write_params

pytestmark = pytest.mark.repro

DATA_STAGES = ("demo_data", "prepare", "featurize")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    home = tmp_path_factory.mktemp("dvc_home")
    (home / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")
    env = subprocess_env()
    env.pop("PYTHONPATH")  # stages run from the copy, the way `dvc repro` runs them for a user
    env.update(DVC_GLOBAL_CONFIG_DIR=str(home), DVC_SITE_CACHE_DIR=str(home / "site"),
               GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=str(home / "gitconfig"))
    repo = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    write_params(repo / "params.yaml", TINY_DEMO)

    def run(*args):
        result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    return repo, run


def outputs(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != ".gitignore")  # dvc writes .gitignore


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


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
    assert not list(repo.rglob(".*.tmp"))


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

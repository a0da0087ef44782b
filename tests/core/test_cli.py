"""Every stage ends a user error with its message and exit code 1, never a Python traceback
(stages/core/cli.py); a bug keeps its traceback."""

from __future__ import annotations

import pytest

from helpers import run_stage, write_params

ARGS = {  # each stage's required arguments; the paths need not exist: params.yaml is read first
    "stages.demo_data": ["--out", "demo"],
    "stages.prepare": ["--out", "prepared", "--report", "report.json"],
    "stages.featurize": ["--chunks", "chunks.csv", "--out", "features", "--report", "report.json"],
    "stages.train": ["--model", "ast_tiny", "--prepared", "p", "--features", "f", "--out", "o", "--live", "l",
                     "--resume-dir", "r"],
    "stages.evaluate": ["--model", "ast_tiny", "--prepared", "p", "--features", "f", "--checkpoint", "c.pt",
                        "--out", "o", "--bundle", "b"],
    "stages.spectrograms": ["--prepared", "p", "--features", "f", "--out", "s.png"],
    "stages.report": ["--train-dir", "t", "--eval-dir", "e", "--out", "o"],
}


@pytest.mark.parametrize("stage", sorted(ARGS))
def test_a_bad_parameter_ends_every_stage_with_one_clean_message(stage, tmp_path):
    write_params(tmp_path / "params.yaml", {"seed": -1})
    result = run_stage(stage, "--params", "params.yaml", *ARGS[stage], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: params.yaml: seed: must be >= 0"


def test_a_missing_dataset_ends_prepare_cleanly(tmp_path):
    """A dataset error is a user error too: the message names what is missing."""
    write_params(tmp_path / "params.yaml", {})
    result = run_stage("stages.prepare", "--params", "params.yaml", "--out", "prepared", "--report", "r.json",
                       cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and "data/demo" in result.stderr  # data.root is not there

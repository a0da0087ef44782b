"""The CUDA path end to end: `dvc repro` of the tiny demo with featurize, training and evaluation on
the GPU, one epoch per model, each model with the recipe `auto` resolves there. Skipped without CUDA;
run it on any GPU machine with `pytest -m gpu`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import ONE_SECOND_CHUNKS, project_repo
from stages.training.recipe import CUDA_AUTO

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ON_GPU = {
    **ONE_SECOND_CHUNKS,
    "features.device": "cuda",
    "train.device": "cuda",
    "train.epochs": 1,
    "train.batch_size": 8,
    "train.precision": "auto",
    "train.channels_last": "auto",
}
FAMILY = {"efficientnet_b0": "cnn", "ast_tiny": "transformer"}


def test_the_demo_pipeline_runs_on_the_gpu(tmp_path_factory):
    project = project_repo(tmp_path_factory, ON_GPU)
    project.run("dvc", "repro")
    reports = project.repo / "reports"
    assert json.loads((reports / "featurize_report.json").read_text())["device"].startswith("cuda")
    gpu = torch.cuda.get_device_name()
    for model, family in FAMILY.items():
        summary = json.loads((reports / "train" / model / "metrics.json").read_text())
        assert summary["device"] == gpu
        assert summary["recipe"]["precision"] == CUDA_AUTO[family][0]
        assert math.isfinite(summary["min_valid_loss"]) and summary["peak_memory_mib"] > 0
        evaluation = json.loads((reports / "eval" / model / "metrics.json").read_text())
        assert evaluation["inference"]["device"] == gpu
        assert evaluation["inference"]["precision"] == CUDA_AUTO[family][0]
        assert 0 <= evaluation["valid"]["map"] <= 1
    assert (reports / "summary.md").exists()

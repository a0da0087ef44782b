"""`dvc exp run -S train.processes=2` in a throw-away repository: the train stage starts two
data-parallel processes under DVC and ends at the single-process result (within rounding). On the
CPU with gloo always; with NCCL and SyncBatchNorm on a machine with 2+ GPUs (`pytest -m gpu`)."""

from __future__ import annotations

import pytest
import torch

from helpers import ONE_SECOND_CHUNKS, PLAIN_RECIPE, project_repo

# 2 epochs in global batches of 5 over the tiny demo's train chunks, no augmentation (each rank
# draws its own masks, shifts and noise), fp32 so that only summation order separates the runs.
NO_AUGMENTATION = {**ONE_SECOND_CHUNKS, **PLAIN_RECIPE, "train.epochs": 2, "train.batch_size": 5, "train.freq_mask": 0,
                   "train.time_mask": 0, "train.mixup_alpha": 0.0, "train.precision": "fp32"}
GPUS = {**NO_AUGMENTATION, "features.device": "cuda", "train.device": "cuda"}
CURVES = ("train_loss", "valid_loss", "valid_map")


def single_and_two_processes(tmp_path_factory, overrides: dict, stage: str) -> tuple[list, list, str]:
    project = project_repo(tmp_path_factory, overrides)
    project.run("dvc", "repro", stage)
    last = project.repo / "models" / stage.split("@")[1] / "last.pt"
    single = torch.load(last, weights_only=True)["history"]
    project.run("git", "add", "-A")
    project.run("git", "commit", "-q", "-m", "baseline")
    exp = project.run("dvc", "exp", "run", "-S", "train.processes=2", stage)
    return single, torch.load(last, weights_only=True)["history"], exp.stdout + exp.stderr


def assert_close_curves(single: list, two: list, tolerance: float) -> None:
    assert len(single) == len(two)
    for one, other in zip(single, two):
        for name in CURVES:
            assert abs(one[name] - other[name]) <= tolerance, (name, one[name], other[name])


def test_exp_run_with_two_cpu_processes_matches_one(tmp_path_factory):
    single, two, output = single_and_two_processes(tmp_path_factory, NO_AUGMENTATION, "train@ast_tiny")
    assert "2 processes" in output and "Running stage 'train@ast_tiny'" in output
    assert_close_curves(single, two, 1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 or more CUDA GPUs")
def test_exp_run_with_two_gpus_and_sync_batchnorm_matches_one(tmp_path_factory):
    """EfficientNet-B0: SyncBatchNorm normalises with the whole global batch, as one process does."""
    single, two, output = single_and_two_processes(tmp_path_factory, GPUS, "train@efficientnet_b0")
    assert "2 processes" in output
    assert_close_curves(single, two, 2e-3)  # TF32 and cuDNN autotuning: equal up to GPU rounding

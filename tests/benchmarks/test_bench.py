"""`make bench` in smoke mode (toy sizes, one repeat): every section runs and every figure the
GPU-speed issue names is in bench.json, finite and positive. No timing is asserted."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from helpers import ROOT, subprocess_env
from subprocesses import run_subprocess


def run_bench(out, *args: str) -> dict:
    result = run_subprocess([sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), *args], cwd=ROOT,
                            env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "bench.json").read_text())


def test_bench_smoke_writes_every_figure(tmp_path):
    bench = run_bench(tmp_path)
    assert bench["smoke"] is True
    for section in ("featurize", "training", "gpu", "predict"):
        assert {"cpu", "cores", "torch", "gpu"} <= set(bench[f"{section}_run"]["machine"])

    featurize = bench["featurize"]
    assert set(featurize["scales"]) == {"1", "2"}
    for name in ("featurize_speedup_vs_naive", "featurize_vs_decode_floor", "featurize_rss_ratio_largest_vs_1x"):
        assert math.isfinite(featurize[name]) and featurize[name] > 0, name
    for scale in featurize["scales"].values():
        assert scale["chunks"] > 0 and scale["ms_per_audio_second"] > 0 and scale["peak_rss_mib_main"] > 0

    training = bench["training"]
    assert training["loader_samples_per_second"] > 0
    assert set(training["models"]) == set(training["data_wait_share"]) == {"efficientnet_b0", "ast_tiny"}
    for model in training["models"].values():
        assert model["loop_samples_per_second"] > 0 and model["inference_samples_per_second"] > 0
        assert model["loop_efficiency"] == model["loop_samples_per_second"] / model["bare_step_samples_per_second"]

    predict = bench["predict"]
    assert set(predict["models"]) == {"efficientnet_b0", "ast_tiny"}
    for model in predict["models"].values():
        for backend in ("torch", "onnx"):
            assert model[backend]["windows"] == 2  # one 10 s soundscape
            # from the unrounded speed: within the rounding of windows_per_second
            assert model[backend]["projected_hidden_test_minutes"] == pytest.approx(
                9600 / model[backend]["windows_per_second"] / 60, rel=0.01)
        assert model["faster_backend"] in ("torch", "onnx") and model["onnx_speedup_vs_torch"] > 0
    assert predict["memory"]["short_peak_rss_mib"] > 0 and predict["memory"]["long_peak_rss_mib"] > 0
    assert "## Predict (CPU" in (tmp_path / "bench.md").read_text()

    if not torch.cuda.is_available():
        assert bench["gpu"] is None
        assert "Not measured: torch saw no CUDA device" in (tmp_path / "bench.md").read_text()

    # The GPU section alone (its code run on the CPU here), merged into the figures already there.
    merged = run_bench(tmp_path, "--sections", "gpu", "--gpu-device", "cpu")
    assert merged["featurize"] == bench["featurize"] and merged["training"] == bench["training"]
    gpu = merged["gpu"]
    assert gpu["loop_chunks"] % 2 == 1  # the real loop meets a short last batch
    for model in gpu["models"].values():
        labels = {row["recipe"] for row in model["recipes"]}
        assert {"default, cudnn_benchmark off", "default, fused_optimizer off", "default, tf32 off"} <= labels
        assert set(model["loops"]) == {"default", "best"}
        for loop in model["loops"].values():
            assert loop["loop_samples_per_second"] > 0
            hours = loop["projected_50_epoch_hours"]
            chunks = gpu["birdclef_2021_train_chunks_per_epoch"]
            assert hours["1"] == 50 * chunks / loop["loop_samples_per_second"] / 3600
    assert {row["recipe"] for row in gpu["models"]["efficientnet_b0"]["recipes"]} > \
        {row["recipe"] for row in gpu["models"]["ast_tiny"]["recipes"]}  # channels_last: CNNs only

    markdown = (tmp_path / "bench.md").read_text()
    for heading in ("## Featurize", "## Training data path and loop", "## GPU: cpu", "Smoke run", "GPU busy"):
        assert heading in markdown

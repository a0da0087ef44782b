"""`make bench` in smoke mode (toy sizes, one repeat): every section runs and every figure the
GPU-speed issue names is in bench.json, finite and positive. No timing is asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch

from helpers import ROOT, subprocess_env


def test_bench_smoke_writes_every_figure(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                            env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["smoke"] is True
    assert {"cpu", "cores", "torch", "gpu"} <= set(bench["machine"])

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

    if torch.cuda.is_available():
        assert bench["gpu"]["models"]["ast_tiny"]["loop_samples_per_second"] > 0
    else:
        assert bench["gpu"] is None and "CUDA" in bench["gpu_reason"]

    markdown = (tmp_path / "bench.md").read_text()
    for heading in ("## Featurize", "## Training data path and loop", "## GPU", "Smoke run"):
        assert heading in markdown

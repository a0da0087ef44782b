"""Hand-written inputs of the report tests: DVCLive-style training reports (metrics.json and the
per-epoch loss / valid mAP TSVs) and evaluation metrics for two models, with known numbers
throughout; and readers of what the report stage writes."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
from PIL import Image


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("efficientnet_b0", "ast_tiny")

LOSSES = {  # per model: (train_loss, valid_loss, valid_map) per epoch, DVCLive step 1 = epoch 1
    "efficientnet_b0": ([0.5, 0.3, 0.25], [0.6, 0.3125, 0.4], [0.25, 0.5, 0.75]),
    "ast_tiny": ([0.7, 0.2, 0.125], [0.5, 0.25, 0.1875], [0.125, 0.375, 0.625]),
}
# What stages/training/convergence.py would make of LOSSES, worked out by hand. efficientnet_b0: final valid
# loss 0.4, bound 0.44, first epoch at or below it is 2 (0.3125); ast_tiny: final 0.1875, bound
# 0.20625, epoch 3. Both fell by more than 10% from their first epoch, and end more than 10% below
# their class prior's valid loss (0.75, 0.5; evaluation() below): learned. Quarters of 3 epochs end at epochs ceil(3/4, 6/4, 9/4, 12/4) = 1, 2, 3, 3.
CONVERGENCE = {
    "efficientnet_b0": {"learned": True, "valid_loss_first": 0.6, "epochs_to_within_10pct": 2, "seconds_to_within_10pct": 8.75,
                        "valid_loss_q1": 0.6, "valid_loss_q2": 0.3125, "valid_loss_q3": 0.4, "valid_loss_q4": 0.4},
    "ast_tiny": {"learned": True, "valid_loss_first": 0.5, "epochs_to_within_10pct": 3, "seconds_to_within_10pct": 30.25,
                 "valid_loss_q1": 0.5, "valid_loss_q2": 0.25, "valid_loss_q3": 0.1875, "valid_loss_q4": 0.1875},
}
THRESHOLD_RULE = "best row-wise F1 on 1 of 2 labelled soundscape files (taken alternately in sorted order); scored on the other 1"


def train_summary(seed: int) -> dict:
    """What stages.train writes via DVCLive: the last logged metrics, `step`, then the summary."""
    model = MODELS[seed]
    return {
        "train_loss": LOSSES[model][0][-1], "valid_loss": LOSSES[model][1][-1], "valid_map": LOSSES[model][2][-1],
        "lr": 1e-5, "epoch_seconds": 2.0, "train_samples_per_second": 50.0, "step": 3,
        "effective_lr": [5e-4, 1e-4][seed],
        "epochs": 3,
        "params_total": [4_010_815, 5_410_563][seed],
        "params_trainable": [4_010_815, 5_410_563][seed],
        "min_train_loss": [0.25, 0.125][seed],
        "min_valid_loss": [0.3125, 0.1875][seed],
        "best_epoch": [2, 3][seed],
        "max_valid_map": [0.75, 0.625][seed],
        "convergence": CONVERGENCE[model],
        "wall_clock_seconds": [12.5, 30.25][seed],
        "mean_epoch_seconds": [4.25, 10.5][seed],
        "mean_train_samples_per_second": [40.5, 16.25][seed],
        "peak_memory_mib": [900.0, 1200.0][seed],
        "device": "cpu",
        "torch_version": "2.x",
        "recipe": {"precision": "fp32", "channels_last": bool(seed), "compile": False, "batch_size": 16},
        "cpu_threads": 2,
    }


def evaluation(seed: int, soundscape: bool = True) -> dict:
    """evaluate's metrics.json layout (stages/evaluate.py)."""
    result = {
        "valid": {"chunks": [9, 7][seed], "recordings": [3, 2][seed], "bce_loss": 0.5,
                  "map": [0.75, 0.625][seed], "map_ci_low": [0.5, 0.375][seed], "map_ci_high": [0.875, 0.8125][seed],
                  "lrap": 0.8, "top1_accuracy": [0.5, 0.375][seed]},
        "baselines": {"class_prior": {"valid_map": [0.3125, 0.34375][seed], "valid_loss": [0.75, 0.5][seed]}},
        "inference": {"windows_per_second": [123.5, 45.25][seed], "batch_size": 64, "device": "cpu",
                      "precision": "fp32"},
    }
    if soundscape:
        result["soundscape"] = {
            "windows_tune": 4, "windows_scored": 8, "threshold_rule": THRESHOLD_RULE,
            "threshold": [0.25, 0.35][seed],
            "row_f1": [0.625, 0.5][seed], "row_f1_ci_low": [0.375, 0.25][seed], "row_f1_ci_high": [0.875, 0.75][seed],
            "row_f1_at_0.5": [0.25, 0.375][seed],
            "nocall_fraction_true": 0.5, "nocall_fraction_predicted": [0.25, 0.75][seed]}
        result["baselines"]["class_prior"].update(row_f1=[0.0625, 0.125][seed], threshold=0.05)
        result["baselines"]["all_nocall"] = {"row_f1": 0.5}
    return result


PER_CLASS_AP = {  # a class without a valid positive has no AP (an empty cell, as pandas writes NaN)
    "efficientnet_b0": "class,n_positive,average_precision\namerob,2,0.5\nnorcar,0,\nrewbla,1,0.25\n",
    "ast_tiny": "class,n_positive,average_precision\namerob,2,0.75\nnorcar,0,\nrewbla,1,1.0\n",
}


def write_inputs(root, soundscape=(True, True)):
    train_dir, eval_dir = root / "reports" / "train", root / "reports" / "eval"
    for seed, model in enumerate(MODELS):
        live = train_dir / model
        (live / "plots" / "metrics").mkdir(parents=True)
        (live / "metrics.json").write_text(json.dumps(train_summary(seed), indent=4))
        for name, values in zip(("train_loss", "valid_loss", "valid_map"), LOSSES[model]):
            lines = [f"step\t{name}"] + [f"{step}\t{value}" for step, value in enumerate(values, start=1)]
            (live / "plots" / "metrics" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
        # A curve the report must ignore, as DVCLive writes one per logged metric.
        (live / "plots" / "metrics" / "lr.tsv").write_text("step\tlr\n1\t0.001\n2\t0.0005\n3\t0.0001\n")
        (eval_dir / model).mkdir(parents=True)
        (eval_dir / model / "metrics.json").write_text(json.dumps(evaluation(seed, soundscape[seed])))
        (eval_dir / model / "per_class_ap.csv").write_text(PER_CLASS_AP[model])
        (eval_dir / model / "precision_recall.json").write_text(
            json.dumps({"precision_recall": [{"recall": 1.0, "precision": 0.5, "threshold": 0.1 * seed}]}))
    return train_dir, eval_dir


def table_rows(summary: str) -> dict[str, list[str]]:
    """The comparison table of summary.md (the first table) as {row label: cells}, labels stripped."""
    rows, started = {}, False
    for line in summary.splitlines():
        if line.startswith("|"):
            started = True
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif started:
            break
    return rows


def table_lines(summary: str) -> list[list[str]]:
    """The body rows of summary.md's first table, in order, duplicates kept: [label, *cells]."""
    lines = []
    for line in summary.splitlines():
        if line.startswith("|"):
            lines.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif lines:
            break
    return lines[2:]  # header and separator


def assert_readable_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 0 and data.startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 0 and height > 0
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert np.ptp(pixels[..., :3]) > 0  # not a blank canvas

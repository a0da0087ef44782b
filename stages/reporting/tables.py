"""The comparison table of reports/summary.md and comparison.csv, and the headline numbers of
reports/scores.json and reports/timing.json, from each model's training summary and evaluation."""

from __future__ import annotations

import pandas as pd

from stages.training.convergence import faster_model_sentence

# (label in the table, column in comparison.csv, format)
ROWS = [
    ("device", "device", "{}"),
    ("training recipe (precision, batch)", "recipe", "{}"),
    ("training chunks and augmentation", "augmentation", "{}"),
    ("effective learning rate", "effective_lr", "{:.2e}"),
    ("epochs", "epochs", "{:d}"),
    ("wall-clock, all epochs (s)", "wall_clock_seconds", "{:.1f}"),
    ("mean epoch time (s)", "mean_epoch_seconds", "{:.2f}"),
    ("train samples/s", "train_samples_per_second", "{:.1f}"),
    ("parameters (model as trained)", "params_total", "{:,}"),
    ("peak memory (MiB)", "peak_memory_mib", "{:.0f}"),
    ("min train loss", "min_train_loss", "{:.4g}"),
    ("min valid loss", "min_valid_loss", "{:.4g}"),
    ("  class-prior baseline, valid loss", "baseline_prior_loss", "{:.4g}"),
    ("epochs to within 10% of final valid loss", "epochs_to_within_10pct", "{:d}"),
    ("seconds to within 10% of final valid loss", "seconds_to_within_10pct", "{:.0f}"),
    ("valid loss after 1/4, 2/4, 3/4, 4/4 of training", "valid_loss_quarters", "{}"),
    ("valid chunks (recordings)", "valid_size", "{}"),
    ("valid mAP [95% interval]", "valid_map_text", "{}"),
    ("  class-prior baseline, valid mAP", "baseline_prior_map", "{:.3f}"),
    ("valid top-1 accuracy", "valid_top1_accuracy", "{:.3f}"),
    ("soundscape windows scored (tuning)", "soundscape_size", "{}"),
    ("call threshold (tuned on held-out soundscapes)", "threshold", "{:.2f}"),
    ("soundscape row-wise F1 [95% interval]", "soundscape_f1_text", "{}"),
    ("  all-nocall baseline, F1", "baseline_nocall_f1", "{:.3f}"),
    ("  class-prior baseline, F1", "baseline_prior_f1", "{:.3f}"),
    ("soundscape row-wise F1 at 0.5", "soundscape_row_f1_at_0.5", "{:.3f}"),
    ("predicted / true nocall share", "nocall_shares", "{}"),
    ("inference windows/s", "inference_windows_per_second", "{:.1f}"),
]


REFERENCE = """\
### The reference experiment (the published comparison this project reproduces; not produced by this pipeline)

50 epochs, ImageNet-pretrained, Adam + CosineAnnealingLR, on an RTX 2080 Ti (11 GB):

| | EfficientNet-B0 | AST-tiny |
|---|---|---|
| learning rate | 5e-4 | 1e-4 |
| wall-clock, 50 epochs | 6 h | 9 h |
| parameters | 4.5 M | 6.0 M (5.58 M as trained, plus two unused 1000-class DeiT heads) |
| min train loss | 7.22e-4 | 7.23e-4 |
| min valid loss | 4.07e-4 | 4.16e-4 |
"""


def comparison_row(model: str, train_summary: dict, evaluation: dict) -> dict:
    valid, sound = evaluation["valid"], evaluation.get("soundscape", {})
    base, speed = evaluation["baselines"], train_summary["convergence"]
    nan = float("nan")
    return {
        "model": model,
        "device": train_summary["device"],
        "recipe": recipe_text(train_summary["recipe"]) + weights_text(train_summary),
        "augmentation": train_summary.get("augmentation", "every chunk an epoch"),
        "effective_lr": train_summary["effective_lr"],
        "epochs": train_summary["epochs"],
        "wall_clock_seconds": train_summary["wall_clock_seconds"],
        "mean_epoch_seconds": train_summary["mean_epoch_seconds"],
        "train_samples_per_second": train_summary["mean_train_samples_per_second"],
        "params_total": train_summary["params_total"],
        "peak_memory_mib": train_summary["peak_memory_mib"],
        "min_train_loss": train_summary["min_train_loss"],
        "min_valid_loss": train_summary["min_valid_loss"],
        "baseline_prior_loss": base["class_prior"]["valid_loss"],
        "epochs_to_within_10pct": speed["epochs_to_within_10pct"],
        "seconds_to_within_10pct": speed["seconds_to_within_10pct"],
        "valid_loss_quarters": ", ".join(f"{speed[f'valid_loss_q{q}']:.3g}" for q in (1, 2, 3, 4)),
        "valid_size": f"{valid['chunks']} ({valid['recordings']})",
        "valid_map": valid["map"],
        "valid_map_text": interval_text(valid["map"], valid["map_ci_low"], valid["map_ci_high"]),
        "baseline_prior_map": base["class_prior"]["valid_map"],
        "valid_top1_accuracy": valid["top1_accuracy"],
        "soundscape_size": f"{sound.get('windows_scored', 0)} ({sound.get('windows_tune', 0)})",
        "threshold": sound.get("threshold", nan),
        "soundscape_row_f1": sound.get("row_f1", nan),
        "soundscape_f1_text": interval_text(sound.get("row_f1", nan), sound.get("row_f1_ci_low", nan),
                                            sound.get("row_f1_ci_high", nan)),
        "baseline_nocall_f1": base.get("all_nocall", {}).get("row_f1", nan),
        "baseline_prior_f1": base["class_prior"].get("row_f1", nan),
        "soundscape_row_f1_at_0.5": sound.get("row_f1_at_0.5", nan),
        "nocall_shares": (f"{sound['nocall_fraction_predicted']:.2f} / {sound['nocall_fraction_true']:.2f}"
                          if sound else nan),
        "soundscape_f1_low": sound.get("row_f1_ci_low", nan),
        "soundscape_f1_high": sound.get("row_f1_ci_high", nan),
        "nocall_predicted": sound.get("nocall_fraction_predicted", nan),
        "nocall_true": sound.get("nocall_fraction_true", nan),
        "inference_windows_per_second": evaluation["inference"]["windows_per_second"],
    }


def interval_text(value: float, low: float, high: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def recipe_text(recipe: dict) -> str:
    extras = [name for name in ("channels_last", "compile", "cudnn_benchmark", "fused_optimizer", "tf32")
              if recipe.get(name)]
    return " + ".join([recipe["precision"], *extras]) + f", batch {recipe['batch_size']}"


def weights_text(train_summary: dict) -> str:
    """How the kept weights were made, when not simply the last step's (train.ema_decay)."""
    weights = train_summary.get("weights", "last step")
    return "" if weights == "last step" else f"; weights: {weights}"


def summary_markdown(comparison: pd.DataFrame, convergence: dict[str, dict], threshold_rule: str) -> str:
    prior_losses = dict(zip(comparison["model"], comparison["baseline_prior_loss"]))
    lines = ["# Model comparison", "",
             "Produced by `dvc repro` (stage `report`) from the training and evaluation reports. "
             "Baselines are scored on the same chunks and windows as the models; intervals are "
             "bootstrap percentiles over valid recordings (mAP) and soundscape windows (F1).", "",
             summary_table(comparison).to_markdown(disable_numparse=True), "",
             f"Call threshold: {threshold_rule}.", "",
             f"Convergence: {faster_model_sentence(convergence, prior_losses)}", "",
             "![loss curves](loss_curves.png)", "", "![per-class AP](per_class_ap.png)", "", REFERENCE]
    return "\n".join(lines)


def summary_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """The table of summary.md as text cells: a row per ROWS label, a column per model."""
    cells = {label: [fmt.format(value) if pd.notna(value) else "n/a" for value in comparison[column]]
             for label, column, fmt in ROWS}
    # Text cells and disable_numparse: tabulate would otherwise re-format "5.00e-04" as 0.0005.
    return pd.DataFrame.from_dict(cells, orient="index", columns=list(comparison["model"]))


# Headline figures: (file, name in the file, column of comparison.csv). Short names keep
# `dvc exp show` narrow: its columns read `<model>.<name>`.
HEADLINE = [
    ("scores.json", "mAP", "valid_map"),
    ("scores.json", "F1", "soundscape_row_f1"),
    ("scores.json", "loss", "min_valid_loss"),
    ("scores.json", "params", "params_total"),
    # What an ablation row needs beside the F1: its interval, the all-nocall baseline, the nocall shares.
    ("soundscape.json", "F1_low", "soundscape_f1_low"),
    ("soundscape.json", "F1_high", "soundscape_f1_high"),
    ("soundscape.json", "F1_all_nocall", "baseline_nocall_f1"),
    ("soundscape.json", "nocall_predicted", "nocall_predicted"),
    ("soundscape.json", "nocall_true", "nocall_true"),
    ("timing.json", "s_epoch", "mean_epoch_seconds"),
    ("timing.json", "train_sps", "train_samples_per_second"),
    ("timing.json", "infer_sps", "inference_windows_per_second"),
]


def headline_number(value) -> int | float | None:
    """4 significant digits (a loss of 7.2e-4 keeps its digits), integers as they are."""
    if pd.isna(value):
        return None
    if float(value).is_integer() and abs(value) >= 1000:
        return int(value)
    return float(f"{float(value):.4g}")

"""reports/ablations.md/.png (AST variants) and reports/recipe_ablations.md/.png (the training recipe's
elements) from the tables bench/ablations.py collects. The F1 panels show each row's 95% interval and
the all-nocall baseline: an F1 at that line is the answer `nocall` everywhere, not learning."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.core.atomic import write_text
from stages.reporting.figures import plt, save_png

METRICS = [("valid_mAP", "valid mAP"), ("soundscape_F1", "soundscape row-wise F1"),
           ("min_valid_loss", "min valid loss"), ("s_per_epoch", "seconds per epoch")]
RECIPE_METRICS = [("soundscape_F1", "soundscape row-wise F1"), ("nocall_predicted", "predicted nocall share"),
                  ("valid_mAP", "valid mAP"), ("s_per_epoch", "seconds per epoch")]
MODEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")

RANDOM_INIT_NOTE = (
    "These runs start from random weights, so the position-embedding variants (bilinear / nearest / "
    "reinit), which differ only in how ImageNet's 14x14 DeiT grid is fitted to the patch grid, would be "
    "the same model: the set runs patch shapes, patchout, and the two ways to start the position "
    "embeddings (`pos_embed_init`: the 2-D sine-cosine code of every other row, or the official code's "
    "small random values, `trunc_normal`). Pass a DeiT-tiny checkpoint (`make ablations WEIGHTS=path`) "
    "to run all fitting variants.")

RECIPE_NOTE = (
    "Each row sets every element's parameters (bench/recipe_variants.py), so it means what its name says "
    "whatever params.yaml's defaults are. `crops`: chunks 2.5 s apart (up to 8 per recording), 3 drawn "
    "per recording each epoch, each rolled by up to 0.5 s; `noise`: background noise on half the training "
    "chunks at 0-20 dB SNR and a tenth replaced by noise alone (no target); `ema`: the weights' moving "
    "average, decay 0.9; `crops-noise`: params.yaml's defaults; `all`: the three. Valid mAP is measured "
    "on the valid chunks of each row's chunking (2.5 s apart gives more of them); the soundscape windows "
    "are the same in every row.")


def with_interval(table: pd.DataFrame) -> pd.DataFrame:
    """The F1 column as `F1 [low, high]` text, the interval columns folded into it."""
    shown = table.copy()
    shown["soundscape_F1"] = [f"{f1:.3f} [{low:.3f}, {high:.3f}]" for f1, low, high
                              in zip(table["soundscape_F1"], table["F1_low"], table["F1_high"])]
    return shown.drop(columns=["F1_low", "F1_high"]).rename(columns={"soundscape_F1": "soundscape_F1 [95%]"})


def provenance(seconds: float | None) -> str:
    took = "" if seconds is None else f" ({seconds / 60:.0f} min for the set)"
    return ("Queued with `dvc exp run --queue`, run with `dvc queue start`, collected from "
            f"`dvc exp show --json` by `make ablations`{took}.")


def write_report(table: pd.DataFrame, out: Path, pretrained: bool, seconds: float | None) -> None:
    lines = ["# AST ablations", "",
             f"{provenance(seconds)} One row per experiment; the EfficientNet stages were restored from the "
             "run-cache.", "",
             with_interval(table).to_markdown(index=False, floatfmt=".4g"), "",
             "![ablations](ablations.png)", ""]
    if not pretrained:
        lines += [RANDOM_INIT_NOTE, ""]
    write_text(out / "ablations.md", "\n".join(lines))
    plot(table, METRICS, [name.removeprefix("abl-") for name in table["experiment"]], ["tab:blue"] * len(table),
         "AST variants (one bar per experiment)", out / "ablations.png")


def write_recipe_report(table: pd.DataFrame, out: Path, seconds: float | None) -> None:
    shown = with_interval(table)
    shown["nocall predicted / true"] = [f"{p:.2f} / {t:.2f}" for p, t in zip(table["nocall_predicted"],
                                                                             table["nocall_true"])]
    shown = shown.drop(columns=["nocall_predicted", "nocall_true"])
    lines = ["# Training recipe ablations", "",
             f"{provenance(seconds)} One row per experiment and model; `F1_all_nocall` is the score of "
             "answering `nocall` everywhere.", "",
             shown.to_markdown(index=False, floatfmt=".4g"), "",
             "![recipe ablations](recipe_ablations.png)", "", RECIPE_NOTE, ""]
    write_text(out / "recipe_ablations.md", "\n".join(lines))
    models = list(dict.fromkeys(table["model"]))
    colours = [MODEL_COLOURS[models.index(model) % len(MODEL_COLOURS)] for model in table["model"]]
    labels = [f"{name.removeprefix('rec-')} · {model}" for name, model in zip(table["experiment"], table["model"])]
    plot(table, RECIPE_METRICS, labels, colours, "Training recipe elements (one bar per experiment and model)",
         out / "recipe_ablations.png")


def plot(table: pd.DataFrame, metrics: list[tuple[str, str]], labels: list[str], colours: list[str], title: str,
         path: Path) -> None:
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 0.45 * len(table) + 2),
                             sharey=True, layout="constrained")
    for ax, (column, heading) in zip(axes, metrics):
        values = table[column]
        error = None
        if column == "soundscape_F1":
            error = [values - table["F1_low"], table["F1_high"] - values]
            ax.axvline(table["F1_all_nocall"].iloc[0], color="grey", linestyle="--", label="all-nocall")
            ax.legend(loc="lower right", fontsize="small")
        if column == "nocall_predicted":
            ax.axvline(table["nocall_true"].iloc[0], color="black", linestyle=":", label="true share")
            ax.legend(loc="lower right", fontsize="small")
        ax.barh(labels, values, xerr=error, color=colours, capsize=3)
        ax.set_title(heading)
        ax.grid(True, axis="x", alpha=0.3)
        if column in ("valid_mAP", "soundscape_F1", "nocall_predicted"):
            ax.set_xlim(0, 1)
    axes[0].invert_yaxis()  # the first experiment on top, as in the table
    fig.suptitle(title)
    save_png(fig, path)

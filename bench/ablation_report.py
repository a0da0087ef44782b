"""reports/ablations.md and reports/ablations.png from the table bench/ablations.py collects."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.core.atomic import write_text
from stages.reporting.figures import plt, save_png

METRICS = [("valid_mAP", "valid mAP"), ("soundscape_F1", "soundscape row-wise F1"),
           ("min_valid_loss", "min valid loss"), ("s_per_epoch", "seconds per epoch")]

RANDOM_INIT_NOTE = (
    "These runs start from random weights, so the position-embedding variants (bilinear / nearest / "
    "reinit), which differ only in how ImageNet's 14x14 DeiT grid is fitted to the patch grid, would be "
    "the same model: the set runs patch shapes, patchout, and the two ways to start the position "
    "embeddings (`pos_embed_init`: the 2-D sine-cosine code of every other row, or the official code's "
    "small random values, `trunc_normal`). Pass a DeiT-tiny checkpoint (`make ablations WEIGHTS=path`) "
    "to run all fitting variants.")


def write_report(table: pd.DataFrame, out: Path, pretrained: bool, seconds: float) -> None:
    lines = ["# AST ablations", "",
             "Queued with `dvc exp run --queue`, run with `dvc queue start`, collected from "
             f"`dvc exp show --json` by `make ablations` ({seconds / 60:.0f} min for the set). "
             "One row per experiment; the EfficientNet stages were restored from the run-cache.", "",
             table.to_markdown(index=False, floatfmt=".4g"), "",
             "![ablations](ablations.png)", ""]
    if not pretrained:
        lines += [RANDOM_INIT_NOTE, ""]
    write_text(out / "ablations.md", "\n".join(lines))
    plot(table, out / "ablations.png")


def plot(table: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.5 * len(METRICS), 0.5 * len(table) + 2),
                             sharey=True, layout="constrained")
    labels = [name.removeprefix("abl-") for name in table["experiment"]]
    for ax, (column, title) in zip(axes, METRICS):
        ax.barh(labels, table[column], color="tab:blue")
        ax.set_title(title)
        ax.grid(True, axis="x", alpha=0.3)
        if column in ("valid_mAP", "soundscape_F1"):
            ax.set_xlim(0, 1)
    axes[0].invert_yaxis()  # the first experiment on top, as in the table
    fig.suptitle("AST variants (one bar per experiment)")
    save_png(fig, path)

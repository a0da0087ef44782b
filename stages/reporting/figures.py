"""The report's PNG figures (they work offline, unlike `dvc plots`' HTML): learning curves and
per-class average precision, every model in one figure so they compare at a glance."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from stages.core.atomic import atomic_path

DPI = 120


def save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def plot_learning_curves(histories: dict[str, pd.DataFrame], path: Path) -> None:
    """Left: train and valid BCE per epoch (log scale). Right: valid mAP per epoch."""
    fig, (loss_ax, map_ax) = plt.subplots(1, 2, figsize=(12, 5))
    colors = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for color, (model, history) in zip(colors, histories.items()):
        loss_ax.plot(history["epoch"], history["train_loss"], color=color, marker="o", label=f"{model} train")
        loss_ax.plot(history["epoch"], history["valid_loss"], color=color, marker="s", linestyle="--",
                     label=f"{model} valid")
        map_ax.plot(history["epoch"], history["valid_map"], color=color, marker="s", label=model)
    loss_ax.set_yscale("log")  # BCE losses shrink by orders of magnitude over training
    loss_ax.set_ylabel("BCE loss (log scale)")
    loss_ax.set_title("Train and valid loss per epoch")
    map_ax.set_ylim(0, 1.02)
    map_ax.set_ylabel("valid mAP")
    map_ax.set_title("Valid mAP per epoch")
    for ax in (loss_ax, map_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_png(fig, path)


def plot_per_class_ap(per_class: dict[str, pd.DataFrame], path: Path) -> None:
    """Grouped horizontal bars: each class's valid AP, one bar per model (classes without a valid
    positive have no AP and are left out)."""
    models = list(per_class)
    table = pd.concat({m: t.set_index("class")["average_precision"] for m, t in per_class.items()}, axis=1)
    table = table.dropna(how="all")
    # How many valid positives each AP rests on (the same valid split for every model): 1 or 2
    # positives make an AP of 1.0 cheap.
    positives = next(iter(per_class.values())).set_index("class")["n_positive"]
    height = max(3.0, 0.35 * len(table) * max(1, len(models)) + 1.5)
    fig, ax = plt.subplots(figsize=(8, min(height, 60)))
    bar = 0.8 / max(1, len(models))
    positions = np.arange(len(table))
    for i, model in enumerate(models):
        ax.barh(positions + i * bar, table[model].fillna(0), height=bar, label=model)
    ax.set_yticks(positions + bar * (len(models) - 1) / 2,
                  [f"{code} (n={positives.get(code, 0)})" for code in table.index])
    ax.invert_yaxis()  # classes read top to bottom in classes.txt order
    ax.set_xlim(0, 1)
    ax.set_xlabel("average precision on the valid split (n: valid chunks with the class)")
    ax.set_title("Per-class average precision")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars, never over one
    fig.tight_layout()
    save_png(fig, path)

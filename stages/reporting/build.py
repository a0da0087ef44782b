"""Everything stage report writes, from reports/train/<model>/ and reports/eval/<model>/.

reports/summary.md and comparison.csv (the table), loss_curves.png and per_class_ap.png (offline
figures), scores.json and timing.json (what `dvc exp show` and `dvc metrics diff` compare; timings
apart because they change on every run), and the per-model plot folders of dvc.yaml's `plots:`
(curves/, precision_recall/, per_class_ap/), each written whole.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from stages.core.atomic import atomic_path, write_json, write_text
from stages.evaluation.outputs import METRICS, PER_CLASS_AP, PRECISION_RECALL
from stages.reporting.figures import plot_learning_curves, plot_per_class_ap
from stages.reporting.tables import HEADLINE, comparison_row, headline_number, summary_markdown

HISTORY_COLUMNS = ("train_loss", "valid_loss", "valid_map")


def read_history(live_dir: Path) -> pd.DataFrame:
    """Per-epoch train/valid loss and valid mAP from DVCLive's TSV files."""
    frames = []
    for name in HISTORY_COLUMNS:
        table = pd.read_csv(live_dir / "plots" / "metrics" / f"{name}.tsv", sep="\t")
        frames.append(table.set_index("step")[name])
    history = pd.concat(frames, axis=1).reset_index()
    history["epoch"] = history.pop("step")  # train logs DVCLive steps as 1-based epochs
    return history


def write_headline(comparison: pd.DataFrame, out: Path) -> None:
    files: dict[str, dict] = {}
    for file, name, column in HEADLINE:
        for model, value in zip(comparison["model"], comparison[column]):
            files.setdefault(file, {}).setdefault(model, {})[name] = headline_number(value)
    for file, content in files.items():
        write_json(out / file, content)


def publish_plots(histories: dict[str, pd.DataFrame], eval_dir: Path, out: Path) -> None:
    """The per-model plot files of dvc.yaml's `plots:`, one folder per kind, each written whole."""
    with atomic_path(out / "curves") as tmp:
        tmp.mkdir()
        for model, history in histories.items():
            history[["epoch", *HISTORY_COLUMNS]].to_csv(tmp / f"{model}.csv", index=False)
    for kind, name in (("precision_recall", PRECISION_RECALL), ("per_class_ap", PER_CLASS_AP)):
        with atomic_path(out / kind) as tmp:
            tmp.mkdir()
            for model in histories:
                shutil.copyfile(eval_dir / model / name, tmp / f"{model}{Path(name).suffix}")


def build_report(models: list[str], train_dir: Path, eval_dir: Path, out: Path) -> pd.DataFrame:
    rows, histories, convergence, per_class, rules = [], {}, {}, {}, set()
    for model in models:
        train_summary = json.loads((train_dir / model / "metrics.json").read_text())
        evaluation = json.loads((eval_dir / model / METRICS).read_text())
        rows.append(comparison_row(model, train_summary, evaluation))
        histories[model] = read_history(train_dir / model)
        convergence[model] = train_summary["convergence"]
        per_class[model] = pd.read_csv(eval_dir / model / PER_CLASS_AP, keep_default_na=False, na_values=[""])
        rules.add(evaluation.get("soundscape", {}).get("threshold_rule", "no labelled soundscapes"))
    comparison = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "comparison.csv") as tmp:
        comparison.to_csv(tmp, index=False)
    write_text(out / "summary.md", summary_markdown(comparison, convergence, "; ".join(sorted(rules))))
    plot_learning_curves(histories, out / "loss_curves.png")
    plot_per_class_ap(per_class, out / "per_class_ap.png")
    publish_plots(histories, eval_dir, out)
    write_headline(comparison, out)
    return comparison

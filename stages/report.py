"""Stage report: the side-by-side comparison of all trained models.

Writes reports/summary.md (table, baselines, which model converged faster, the reference
experiment's figures for context), reports/comparison.csv (one row per model), two offline figures
(reports/loss_curves.png: loss and valid mAP per epoch; reports/per_class_ap.png), and the two
small metrics files `dvc exp show` and `dvc metrics diff` compare: reports/scores.json (per model:
valid mAP, soundscape row-wise F1, min valid loss, parameters) and reports/timing.json (per model:
seconds per epoch, training and inference samples/s), apart because timings change on every run.

    python -m stages.report --params params.yaml --train-dir reports/train --eval-dir reports/eval --out reports

train@ and evaluate@ keep their outputs in DVC's cache (so the run-cache can restore them); this stage
is quick and its outputs go to git: everything a reader opens, and what `dvc exp show`, `dvc metrics
diff` and `dvc plots diff` compare, including one file per model in reports/curves/ (loss per epoch),
reports/precision_recall/ and reports/per_class_ap/.
Intervals are the evaluate stage's bootstrap intervals (evaluate.confidence_level, 95% by default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.cli import run
from stages.core.params import load_params
from stages.reporting.build import build_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train-dir", type=Path, required=True)
    parser.add_argument("--eval-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    build_report(list(params.models), args.train_dir, args.eval_dir, args.out)
    print(f"report: {args.out / 'summary.md'}, {args.out / 'loss_curves.png'}, {args.out / 'per_class_ap.png'}")


if __name__ == "__main__":
    run(main)

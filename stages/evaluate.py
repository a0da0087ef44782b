"""Stage evaluate@<model>: score the best checkpoint on the valid chunks and on the soundscapes.

Valid split: mAP (with a bootstrap interval over recordings), LRAP, top-1, BCE. Soundscapes: the
competition's row-wise F1 at a call threshold tuned on held-out soundscape files, and at 0.5; the
all-`nocall` and class-prior baselines on the same windows. How: stages/evaluation/run.py.

    python -m stages.evaluate --params params.yaml --model ast_tiny --prepared data/prepared \
        --features data/features --checkpoint models/ast_tiny/best.pt --out reports/eval/ast_tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.cli import run
from stages.core.params import load_params
from stages.evaluation.outputs import METRICS, SUBMISSION
from stages.evaluation.run import evaluate
from stages.training.checkpoints import CheckpointError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help=f"folder for {METRICS}, {SUBMISSION}, ...")
    args = parser.parse_args()
    params = load_params(args.params, timm_archs=True)
    result = evaluate(params, args.model, args.prepared, args.features, args.checkpoint, args.out)
    sound = result.get("soundscape", {})
    print(f"evaluate@{args.model}: valid mAP {result['valid']['map']:.3f}, soundscape row F1 "
          f"{sound.get('row_f1', float('nan')):.3f} at threshold {sound.get('threshold', float('nan'))} "
          f"(all-nocall baseline {result['baselines'].get('all_nocall', {}).get('row_f1', float('nan')):.3f})")


if __name__ == "__main__":
    run(main, CheckpointError)

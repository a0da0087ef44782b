"""Stage evaluate@<model>: score the best checkpoint on the valid chunks and on the soundscapes.

Valid split: mAP (with a bootstrap interval over recordings), LRAP, top-1, BCE. Soundscapes: the
competition's row-wise F1 at a call threshold tuned on held-out soundscape files, and at 0.5; the
all-`nocall` and class-prior baselines on the same windows. How: stages/evaluation/run.py. Then
completes the model's bundle with its card (card.json beside best.pt: stages/inference/bundle.py),
which carries the tuned threshold to stage predict.

    python -m stages.evaluate --params params.yaml --model ast_tiny --prepared data/prepared \
        --features data/features --checkpoint models/ast_tiny/best.pt --out reports/eval/ast_tiny \
        --bundle models/ast_tiny
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import read_classes
from stages.core.cli import run
from stages.core.params import load_params
from stages.evaluation.outputs import METRICS, SUBMISSION
from stages.evaluation.run import evaluate
from stages.inference.bundle import UNTUNED_THRESHOLD, Threshold, make_card, write_card
from stages.training.checkpoints import CheckpointError


def tuned_threshold(result: dict) -> Threshold:
    """The call threshold evaluate chose, with what it was chosen on and what it scored elsewhere."""
    sound = result.get("soundscape")
    if sound is None:
        return Threshold(UNTUNED_THRESHOLD, None, None)
    tuned_on = f"{sound['windows_tune']} labelled soundscape windows ({sound['threshold_rule']})"
    return Threshold(sound["threshold"], tuned_on, sound["row_f1"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True)
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help=f"folder for {METRICS}, {SUBMISSION}, ...")
    parser.add_argument("--bundle", type=Path, required=True, help="the model's folder: card.json goes there")
    args = parser.parse_args()
    params = load_params(args.params, timm_archs=True)
    result = evaluate(params, args.model, args.prepared, args.features, args.checkpoint, args.out)
    card = make_card(args.model, params.models[args.model], params.data, params.features,
                     read_feature_stats(args.features), read_classes(args.prepared), tuned_threshold(result),
                     args.checkpoint)
    write_card(args.bundle, card)
    sound = result.get("soundscape", {})
    print(f"evaluate@{args.model}: valid mAP {result['valid']['map']:.3f}, soundscape row F1 "
          f"{sound.get('row_f1', float('nan')):.3f} at threshold {sound.get('threshold', float('nan'))} "
          f"(all-nocall baseline {result['baselines'].get('all_nocall', {}).get('row_f1', float('nan')):.3f})")


if __name__ == "__main__":
    run(main, CheckpointError)

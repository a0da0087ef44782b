"""What stage evaluate@<model> computes: the best checkpoint scored on the valid chunks and on the
labelled soundscapes, beside the baselines, written to reports/eval/<model>/.

Valid split: mAP (with a bootstrap interval over recordings), LRAP, top-1, BCE. Soundscapes: the
competition's row-wise F1 (with a bootstrap interval over windows) at a call threshold tuned on
held-out soundscape files, so that it can say `nocall` (the rule: stages/scoring/threshold.py), and
at 0.5. The all-`nocall` and class-prior baselines are scored the same way, on the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import SplitData, load_split, read_classes
from stages.core.atomic import atomic_path, write_json
from stages.core.devices import device_name, pin_cpu_computation, resolve_device
from stages.core.params import EvaluateParams, Params
from stages.evaluation.outputs import METRICS, PER_CLASS_AP, PRECISION_RECALL, SUBMISSION
from stages.evaluation.predict import predict
from stages.scoring import bootstrap, metrics
from stages.scoring.threshold import choose_call_threshold, class_prior_scores, split_soundscapes
from stages.training.augment import Normalise
from stages.training.batches import BatchReader
from stages.training.recipe import model_for_recipe, resolve_recipe


def bce(targets: np.ndarray, scores: np.ndarray) -> float:
    probabilities = torch.from_numpy(scores).double().clamp(1e-7, 1 - 1e-7)
    return F.binary_cross_entropy(probabilities, torch.from_numpy(targets).double()).item()


def valid_metrics(split: SplitData, scores: np.ndarray, classes: list[str], ep: EvaluateParams,
                  seed: int) -> dict:
    class_index = {code: i for i, code in enumerate(classes)}
    primary = split.labels["primary_label"].map(class_index).to_numpy()
    recordings = split.labels["item_id"].to_numpy()
    low, high = bootstrap.map_interval(split.targets, scores, recordings, ep.bootstrap_samples,
                                       ep.confidence_level, seed)
    return {
        "chunks": len(scores),
        "recordings": len(set(recordings)),
        "bce_loss": bce(split.targets, scores),
        "map": metrics.mean_average_precision(split.targets, scores),
        "map_ci_low": low,
        "map_ci_high": high,
        "lrap": metrics.label_ranking_ap(split.targets, scores),
        "top1_accuracy": metrics.top1_accuracy(primary, scores),
    }


@dataclass(frozen=True)
class SoundscapeScore:
    threshold: float
    predicted: list[set[str]]   # every window, tuning files included (the submission)
    metrics: dict


def score_soundscapes(split: SplitData, scores: np.ndarray, classes: list[str], ep: EvaluateParams,
                      seed: int) -> SoundscapeScore:
    """Tune the call threshold on some soundscape files, score the others (stages/scoring/threshold.py)."""
    truth = np.array(metrics.birds_strings_to_sets(split.labels["birds"]), dtype=object)
    held = split_soundscapes(list(split.labels["path"]), ep.tune_fraction)
    threshold = choose_call_threshold(list(truth[held.tune]), scores[held.tune], classes, ep.threshold_grid)
    predicted = metrics.predictions_to_label_sets(scores, classes, threshold)
    scored_truth = list(truth[held.score])
    scored = [p for p, keep in zip(predicted, held.score) if keep]
    at_half = metrics.predictions_to_label_sets(scores[held.score], classes, 0.5)
    low, high = bootstrap.f1_interval(scored_truth, scored, ep.bootstrap_samples, ep.confidence_level, seed)
    return SoundscapeScore(threshold, predicted, {
        "windows_tune": int(held.tune.sum()),
        "windows_scored": int(held.score.sum()),
        "threshold_rule": held.rule,
        "threshold": threshold,
        "row_f1": metrics.birdclef_row_f1(scored_truth, scored),
        "row_f1_ci_low": low,
        "row_f1_ci_high": high,
        "row_f1_at_0.5": metrics.birdclef_row_f1(scored_truth, at_half),
        "nocall_fraction_true": float(np.mean([s == {metrics.NOCALL} for s in scored_truth])),
        "nocall_fraction_predicted": float(np.mean([s == {metrics.NOCALL} for s in scored])),
    })


def baselines(train: SplitData, valid: SplitData, soundscape: SplitData, classes: list[str],
              ep: EvaluateParams, seed: int) -> dict:
    """The all-`nocall` and class-prior answers, scored like a model on the same chunks and windows."""
    prior_valid = class_prior_scores(train.targets, len(valid.targets))
    result = {"class_prior": {"valid_map": metrics.mean_average_precision(valid.targets, prior_valid),
                              "valid_loss": bce(valid.targets, prior_valid)}}
    if len(soundscape.targets):
        prior_sound = class_prior_scores(train.targets, len(soundscape.targets))
        prior = score_soundscapes(soundscape, prior_sound, classes, ep, seed).metrics
        result["class_prior"].update(row_f1=prior["row_f1"], threshold=prior["threshold"])
        never = np.zeros_like(prior_sound)  # no class reaches any threshold: `nocall` everywhere
        result["all_nocall"] = {"row_f1": score_soundscapes(soundscape, never, classes, ep, seed).metrics["row_f1"]}
    return result


def evaluate(params: Params, model_name: str, prepared_dir: Path, features_dir: Path, checkpoint: Path,
             out_dir: Path) -> dict:
    mp = params.models[model_name]
    device = resolve_device(params.train.device)
    pin_cpu_computation(params.train.threads, device)
    recipe = resolve_recipe(mp.arch, device, params.train)
    classes = read_classes(prepared_dir)
    stats = read_feature_stats(features_dir)
    model = model_for_recipe(mp, len(classes), stats, device, recipe, checkpoint, classes).model

    features = features_dir / "features.npy"
    normalise = Normalise(stats.mean, stats.std)
    valid = load_split(prepared_dir, features_dir, "valid")
    soundscape = load_split(prepared_dir, features_dir, "soundscape")
    batch = params.evaluate.batch_size
    valid_run = predict(model, BatchReader(features, valid, batch, device), normalise, recipe, len(classes),
                        f"evaluate@{model_name}: valid")
    sound_run = predict(model, BatchReader(features, soundscape, batch, device), normalise, recipe, len(classes),
                        f"evaluate@{model_name}: soundscapes")
    valid_scores, sound_scores = valid_run.scores, sound_run.scores

    ep, seed = params.evaluate, params.seed
    result = {"valid": valid_metrics(valid, valid_scores, classes, ep, seed)}
    predicted = []
    if len(sound_scores):
        sound = score_soundscapes(soundscape, sound_scores, classes, ep, seed)
        result["soundscape"], predicted = sound.metrics, sound.predicted
    result["baselines"] = baselines(load_split(prepared_dir, features_dir, "train"), valid, soundscape, classes,
                                    ep, seed)
    windows = len(valid_scores) + len(sound_scores)
    result["inference"] = {"windows_per_second": windows / max(valid_run.seconds + sound_run.seconds, 1e-9),
                           "batch_size": batch, "device": device_name(device), "precision": recipe.precision}

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        metrics.per_class_average_precision(valid.targets, valid_scores, classes).to_csv(
            tmp / PER_CLASS_AP, index=False)
        pd.DataFrame({"row_id": soundscape.labels["item_id"],
                      "birds": metrics.label_sets_to_birds_strings(predicted)}).to_csv(tmp / SUBMISSION, index=False)
        write_json(tmp / PRECISION_RECALL,
                   {"precision_recall": metrics.precision_recall_points(valid.targets, valid_scores)})
        write_json(tmp / METRICS, result)
    return result

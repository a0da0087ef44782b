"""The evaluate stage on really trained models: the tiny demo set cut into 1 s chunks, prepared and
featurized by the real stage functions, each model trained for one epoch on the CPU by
stages.training.loop.train, then scored by stages.evaluation.run.evaluate.

Checks the metrics against their definitions (the threshold rule of stages/scoring/threshold.py:
tuned on held-out soundscape files, reported on the others; sklearn's mAP and LRAP recomputed from
the model's own scores), the baselines against hand computations and the layout of metrics.json. The
files evaluate writes, evaluation without soundscapes and refused checkpoints:
test_evaluation_outputs.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

from helpers import hand_f1
from stages.scoring import metrics
from stages.birdclef.prepared import load_split, read_classes
from stages.birdclef.labels import NOCALL
from evaluated_models import best_threshold, label_sets, scores_of, tune_and_score_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------- metrics

def test_metrics_json_layout(evaluated):
    _, _, _, _, _, out, result = evaluated
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(result))
    assert list(result) == ["valid", "soundscape", "baselines", "inference"]
    assert set(result["valid"]) == {"chunks", "recordings", "bce_loss", "map", "map_ci_low", "map_ci_high",
                                    "lrap", "top1_accuracy"}
    assert set(result["soundscape"]) == {"windows_tune", "windows_scored", "threshold_rule", "threshold",
                                         "row_f1", "row_f1_ci_low", "row_f1_ci_high", "row_f1_at_0.5",
                                         "nocall_fraction_true", "nocall_fraction_predicted"}
    assert result["baselines"].keys() == {"class_prior", "all_nocall"}
    assert set(result["baselines"]["class_prior"]) == {"valid_map", "valid_loss", "row_f1", "threshold"}
    assert set(result["baselines"]["all_nocall"]) == {"row_f1"}
    assert set(result["inference"]) == {"windows_per_second", "batch_size", "device", "precision"}


def test_valid_metrics_are_valid(evaluated):
    _, params, prepared, features, _, _, result = evaluated
    valid = result["valid"]
    split = load_split(prepared, features, "valid")
    assert valid["chunks"] == len(split.feature_rows) > 0
    assert valid["recordings"] == split.labels["item_id"].nunique() > 0
    assert math.isfinite(valid["bce_loss"]) and valid["bce_loss"] > 0
    for name in ("map", "map_ci_low", "map_ci_high", "lrap", "top1_accuracy"):
        assert 0.0 <= valid[name] <= 1.0, name
    assert valid["map_ci_low"] <= valid["map"] <= valid["map_ci_high"]


def test_soundscape_and_inference_metrics(evaluated):
    _, params, prepared, features, _, _, result = evaluated
    soundscape = load_split(prepared, features, "soundscape")
    tune, score = tune_and_score_files(soundscape.labels["item_id"])
    sound = result["soundscape"]
    assert sound["windows_tune"] == tune.sum() > 0
    assert sound["windows_scored"] == score.sum() > 0
    assert sound["windows_tune"] + sound["windows_scored"] == len(soundscape.feature_rows)
    assert "1 of 2 labelled soundscape files" in sound["threshold_rule"]
    assert sound["threshold"] in params.evaluate.threshold_grid
    for name in ("row_f1", "row_f1_ci_low", "row_f1_ci_high", "row_f1_at_0.5", "nocall_fraction_true",
                 "nocall_fraction_predicted"):
        assert 0.0 <= sound[name] <= 1.0, name
    assert sound["row_f1_ci_low"] <= sound["row_f1"] <= sound["row_f1_ci_high"]
    truth = metrics.birds_strings_to_sets(soundscape.labels["birds"][score])
    assert sound["nocall_fraction_true"] == pytest.approx(np.mean([t == {NOCALL} for t in truth]))
    inference = result["inference"]
    assert math.isfinite(inference["windows_per_second"]) and inference["windows_per_second"] > 0
    assert inference["batch_size"] == params.evaluate.batch_size
    assert inference["device"] == "cpu" and inference["precision"] == "fp32"


def test_threshold_follows_the_rule_and_metrics_match_sklearn(evaluated):
    model, params, prepared, features, checkpoint, _, result = evaluated
    classes = read_classes(prepared)
    # The threshold rule: the grid value with the best row-wise F1 on the tuning file (smallest on
    # ties); the F1 reported is that of the other file, at that threshold and at 0.5.
    soundscape, sound_scores = scores_of(model, params, prepared, features, checkpoint, "soundscape")
    tune, score = tune_and_score_files(soundscape.labels["item_id"])
    truth = metrics.birds_strings_to_sets(soundscape.labels["birds"])
    tune_truth = [t for t, keep in zip(truth, tune) if keep]
    threshold = best_threshold(tune_truth, lambda t: label_sets(sound_scores[tune], classes, t),
                               params.evaluate.threshold_grid)
    sound = result["soundscape"]
    assert sound["threshold"] == threshold
    scored_truth = [t for t, keep in zip(truth, score) if keep]
    assert sound["row_f1"] == pytest.approx(hand_f1(scored_truth, label_sets(sound_scores[score], classes, threshold)))
    assert sound["row_f1_at_0.5"] == pytest.approx(hand_f1(scored_truth, label_sets(sound_scores[score], classes, 0.5)))
    predicted = label_sets(sound_scores[score], classes, threshold)
    assert sound["nocall_fraction_predicted"] == pytest.approx(np.mean([p == {NOCALL} for p in predicted]))

    # mAP and LRAP straight from sklearn: classes/rows with a positive, targets binarised (> 0).
    valid, scores = scores_of(model, params, prepared, features, checkpoint, "valid")
    binary = (valid.targets > 0).astype(int)
    present = binary.any(axis=0)
    expected_map = average_precision_score(binary[:, present], scores[:, present], average="macro")
    assert result["valid"]["map"] == pytest.approx(expected_map, abs=1e-6)
    labelled = binary.any(axis=1)
    expected_lrap = label_ranking_average_precision_score(binary[labelled], scores[labelled])
    assert result["valid"]["lrap"] == pytest.approx(expected_lrap, abs=1e-6)
    primary = valid.labels["primary_label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    assert result["valid"]["top1_accuracy"] == pytest.approx(np.mean(scores.argmax(axis=1) == primary))
    probabilities = np.clip(scores.astype(np.float64), 1e-7, 1 - 1e-7)
    expected_bce = -np.mean(valid.targets * np.log(probabilities) + (1 - valid.targets) * np.log(1 - probabilities))
    assert result["valid"]["bce_loss"] == pytest.approx(expected_bce, rel=1e-5)


# -------------------------------------------------------------------------------------- baselines

def test_all_nocall_baseline_is_the_share_of_nocall_windows(evaluated):
    _, _, prepared, features, _, _, result = evaluated
    soundscape = load_split(prepared, features, "soundscape")
    _, score = tune_and_score_files(soundscape.labels["item_id"])
    scored_birds = list(soundscape.labels["birds"][score])
    # {nocall} against {nocall} scores 1, against any bird 0.
    share = sum(birds == NOCALL for birds in scored_birds) / len(scored_birds)
    assert 0 < share < 1  # the demo's soundscapes have both kinds of window
    assert result["baselines"]["all_nocall"]["row_f1"] == pytest.approx(share)


def test_class_prior_baseline_by_hand(evaluated):
    _, params, prepared, features, _, _, result = evaluated
    classes = read_classes(prepared)
    train_targets = load_split(prepared, features, "train").targets
    prior = (train_targets > 0).sum(axis=0) / len(train_targets)
    baseline = result["baselines"]["class_prior"]

    # Valid mAP: every chunk gets the same score for a class, so each class's AP is its share of
    # positive valid chunks; averaged over the classes with a valid positive.
    valid = load_split(prepared, features, "valid").targets > 0
    present = valid.any(axis=0)
    assert baseline["valid_map"] == pytest.approx(valid.mean(axis=0)[present].mean())
    # Valid loss: the training loss's BCE (mean over chunks and classes, soft targets) of those shares.
    soft = load_split(prepared, features, "valid").targets.astype(np.float64)
    by_hand = -(soft * np.log(prior) + (1 - soft) * np.log(1 - prior)).mean()
    assert baseline["valid_loss"] == pytest.approx(by_hand, rel=1e-6)  # shares kept as float32

    # Soundscapes: at threshold t every window predicts the classes whose prior is >= t (else nocall);
    # tuned on the first file, scored on the second, like a model.
    soundscape = load_split(prepared, features, "soundscape")
    tune, score = tune_and_score_files(soundscape.labels["item_id"])
    truth = metrics.birds_strings_to_sets(soundscape.labels["birds"])

    def answer(t: float, n: int) -> list[set[str]]:
        return [{c for c, p in zip(classes, prior) if p >= t} or {NOCALL}] * n

    tune_truth = [t for t, keep in zip(truth, tune) if keep]
    scored_truth = [t for t, keep in zip(truth, score) if keep]
    threshold = best_threshold(tune_truth, lambda t: answer(t, len(tune_truth)), params.evaluate.threshold_grid)
    assert baseline["threshold"] == threshold
    assert baseline["row_f1"] == pytest.approx(hand_f1(scored_truth, answer(threshold, len(scored_truth))))


def test_best_epoch_valid_map_of_training_is_evaluate_s_valid_map(evaluated):
    """train logs valid mAP per epoch (from logits); evaluate scores best.pt on the same chunks (sigmoid):
    the ranking, hence the mAP, is the same."""
    model, params, prepared, features, checkpoint, out, result = evaluated
    live = out.parent / "live"
    history = pd.read_csv(live / "plots" / "metrics" / "valid_map.tsv", sep="\t")
    assert history["step"].tolist() == list(range(1, params.train.epochs + 1))
    assert history["valid_map"].between(0, 1).all()
    best_epoch = torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]
    at_best = history.set_index("step").loc[best_epoch, "valid_map"]
    assert at_best == pytest.approx(result["valid"]["map"], abs=1e-6)

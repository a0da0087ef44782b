"""The evaluate stage on really trained models: the tiny demo set cut into 1 s chunks, prepared and
featurized by the real stage functions, each model trained for one epoch on the CPU by
stages.training.loop.train, then scored by stages.evaluation.run.evaluate.

Checks the metrics against their definitions (the threshold rule of stages/scoring/threshold.py:
tuned on held-out soundscape files, reported on the others; sklearn's mAP and LRAP recomputed from
the model's own scores), the baselines against hand computations, the layout of metrics.json, the submission and
per-class files, and that a damaged or foreign best.pt is refused."""

from __future__ import annotations

import json
import math
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

from helpers import ONE_SECOND_CHUNKS, hand_f1, make_dataset, make_params, prepare_and_featurize
from stages.scoring import metrics
from stages.training.checkpoints import CheckpointError
from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import load_split, read_classes
from stages.evaluation.run import evaluate
from stages.birdclef.labels import NOCALL
from stages.models.factory import create_model
from stages.training.recipe import model_for_recipe, resolve_recipe
from stages.training.loop import TrainPaths, train

# 1 s chunks (128 x 101 log-mels) so a CPU epoch takes a second or two.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    **ONE_SECOND_CHUNKS,
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.time_mask": 10,
    "train.device": "cpu",
    "train.threads": 1,
}
MODELS = ("efficientnet_b0", "ast_tiny")


def small_data(root: Path, out: Path, overrides: dict):
    """What stages `prepare` and `featurize` write, made in-process; returns the params."""
    params = make_params({**SMALL, "data.root": str(root), **overrides})
    return (params, *prepare_and_featurize(root, params, out))


@pytest.fixture(scope="module")
def data(demo_root, tmp_path_factory):
    return small_data(demo_root, tmp_path_factory.mktemp("eval_data"), {})


@pytest.fixture(scope="module", params=MODELS)
def evaluated(request, data, tmp_path_factory):
    """One model trained for one epoch and evaluated: (model, params, dirs, result)."""
    params, prepared, features = data
    model = request.param
    work = tmp_path_factory.mktemp(f"eval_{model}")
    train(params, model, prepared, features,
          TrainPaths(work / "model", work / "live", work / "resume"))
    checkpoint = work / "model" / "best.pt"
    result = evaluate(params, model, prepared, features, checkpoint, work / "eval")
    return model, params, prepared, features, checkpoint, work / "eval", result


def scores_of(model_name, params, prepared, features, checkpoint, split):
    """The checkpoint's sigmoid scores on one split, computed here independently of evaluate()."""
    classes = read_classes(prepared)
    stats = read_feature_stats(features)
    mp = params.models[model_name]
    # The same recipe (memory format) as evaluate: another one rounds differently in the last bits,
    # and the points below sit exactly on score values.
    recipe = resolve_recipe(mp.arch, torch.device("cpu"), params.train)
    model = model_for_recipe(mp, len(classes), stats, torch.device("cpu"), recipe, checkpoint, classes).model
    data = load_split(prepared, features, split)
    rows = np.load(features / "features.npy", mmap_mode="r")[data.feature_rows].astype(np.float32)
    x = (torch.from_numpy(rows) - stats.mean) / (2 * stats.std)
    model.eval()
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(model(part)) for part in x.split(params.evaluate.batch_size)]) if len(x) else torch.zeros(0, len(classes))
    return data, scores.numpy()


def label_sets(scores: np.ndarray, classes: list[str], threshold: float) -> list[set[str]]:
    return [{c for c, s in zip(classes, row) if s >= threshold} or {NOCALL} for row in scores]


def tune_and_score_files(row_ids) -> tuple[np.ndarray, np.ndarray]:
    """The tiny demo has two labelled soundscapes; at tune_fraction 0.5 the first in sorted order tunes the
    threshold and the second is scored."""
    files = np.array([row.rsplit("_", 1)[0] for row in row_ids])
    first, second = sorted(set(files))
    return files == first, files == second


def best_threshold(truth: list[set[str]], set_of: callable, grid: list[float]) -> float:
    """The smallest grid value with the best row-wise F1, `set_of(t)` giving the predictions at t."""
    f1 = {t: hand_f1(truth, set_of(t)) for t in sorted(grid)}
    return min(t for t, value in f1.items() if value == max(f1.values()))


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
    assert set(result["baselines"]["class_prior"]) == {"valid_map", "row_f1", "threshold"}
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


# -------------------------------------------------------------------------------- written files

def test_submission_has_one_row_per_soundscape_window(evaluated):
    model, params, prepared, features, checkpoint, out, result = evaluated
    submission = pd.read_csv(out / "submission.csv", keep_default_na=False)
    assert list(submission.columns) == ["row_id", "birds"]
    soundscape, scores = scores_of(model, params, prepared, features, checkpoint, "soundscape")
    sound = result["soundscape"]
    assert len(submission) == sound["windows_tune"] + sound["windows_scored"] == len(soundscape.feature_rows)
    assert list(submission["row_id"]) == list(soundscape.labels["item_id"])
    assert submission["row_id"].is_unique
    classes = set(read_classes(prepared))
    for birds in submission["birds"]:
        codes = birds.split(" ")
        assert birds == NOCALL or (codes and set(codes) <= classes and codes == sorted(codes)), birds
    # Every window, tuning file included, holds the classes at or above the tuned threshold (else nocall) ...
    threshold = sound["threshold"]
    expected = metrics.label_sets_to_birds_strings(label_sets(scores, read_classes(prepared), threshold))
    assert list(submission["birds"]) == expected
    # ... and the soundscape F1 is that submission scored against the labels on the scored file.
    _, score = tune_and_score_files(soundscape.labels["item_id"])
    truth = metrics.birds_strings_to_sets(soundscape.labels["birds"][score])
    predicted = metrics.birds_strings_to_sets(submission["birds"][score])
    assert sound["row_f1"] == pytest.approx(hand_f1(truth, predicted))


def test_per_class_ap_has_one_row_per_class(evaluated):
    model, params, prepared, features, checkpoint, out, result = evaluated
    table = pd.read_csv(out / "per_class_ap.csv")
    classes = read_classes(prepared)
    assert list(table.columns) == ["class", "n_positive", "average_precision"]
    assert list(table["class"]) == classes
    valid, scores = scores_of(model, params, prepared, features, checkpoint, "valid")
    binary = (valid.targets > 0).astype(int)
    np.testing.assert_array_equal(table["n_positive"], binary.sum(axis=0))
    for i, row in table.iterrows():
        if row["n_positive"] == 0:
            assert math.isnan(row["average_precision"])
        else:
            assert row["average_precision"] == pytest.approx(
                average_precision_score(binary[:, i], scores[:, i]), abs=1e-6)
    assert table["average_precision"].mean() == pytest.approx(result["valid"]["map"], abs=1e-6)


# ------------------------------------------------------------------------------- no soundscapes

def test_without_soundscapes_there_is_no_soundscape_section(tmp_path):
    root = make_dataset(tmp_path / "data", per_species=3, seconds=4.0, soundscape=False)
    params, prepared, features = small_data(root, tmp_path / "work", {})
    # A checkpoint of an untrained model: evaluate must only load it.
    stats = read_feature_stats(features)
    mp = params.models["efficientnet_b0"]
    torch.manual_seed(0)
    model = create_model(mp.arch, len(read_classes(prepared)), stats.n_mels, stats.n_frames, False, mp.options)
    torch.save({"model": model.state_dict(), "epoch": 1, "valid_loss": 0.5, "arch": mp.arch,
                "classes": read_classes(prepared)}, tmp_path / "best.pt")

    result = evaluate(params, "efficientnet_b0", prepared, features, tmp_path / "best.pt", tmp_path / "eval")
    assert "soundscape" not in result
    assert list(result) == ["valid", "baselines", "inference"]
    assert result["baselines"].keys() == {"class_prior"}  # no soundscape: no F1 baselines
    assert result["baselines"]["class_prior"].keys() == {"valid_map"}
    valid = load_split(prepared, features, "valid").targets > 0
    present = valid.any(axis=0)
    assert result["baselines"]["class_prior"]["valid_map"] == pytest.approx(valid.mean(axis=0)[present].mean())
    assert result["valid"]["map_ci_low"] <= result["valid"]["map"] <= result["valid"]["map_ci_high"]
    assert result["inference"]["windows_per_second"] > 0
    submission = pd.read_csv(tmp_path / "eval" / "submission.csv")
    assert list(submission.columns) == ["row_id", "birds"] and len(submission) == 0
    assert len(pd.read_csv(tmp_path / "eval" / "per_class_ap.csv")) == 2


def test_precision_recall_curve_and_metrics_file(evaluated):
    model, params, prepared, features, checkpoint, out, result = evaluated
    points = json.loads((out / "precision_recall.json").read_text())["precision_recall"]
    valid, scores = scores_of(model, params, prepared, features, checkpoint, "valid")
    binary = (valid.targets > 0).ravel()
    assert 2 <= len(points) <= metrics.PR_CURVE_POINTS
    # The lowest threshold calls every pair positive: recall 1, precision the share of positives.
    assert points[0]["recall"] == 1.0
    assert points[0]["precision"] == pytest.approx(binary.mean())
    recalls = [p["recall"] for p in points]
    assert recalls == sorted(recalls, reverse=True)
    thresholds = [p["threshold"] for p in points]
    assert thresholds == sorted(thresholds)
    for point in points:  # each point is what its threshold gives, counted by hand
        called = scores.ravel() >= point["threshold"]
        assert point["recall"] == pytest.approx((called & binary).sum() / binary.sum())
        assert point["precision"] == pytest.approx((called & binary).sum() / called.sum())


# ---------------------------------------------------------------------------------- checkpoints

def test_damaged_best_checkpoint_is_refused_without_the_unsafe_hint(evaluated, tmp_path):
    model, params, prepared, features, checkpoint, _, _ = evaluated
    damaged = tmp_path / "best.pt"
    damaged.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # a disk that filled up
    with pytest.raises(CheckpointError) as caught:
        evaluate(params, model, prepared, features, damaged, tmp_path / "eval")
    shown = "".join(traceback.format_exception(caught.value))
    assert str(damaged) in str(caught.value)
    assert "weights_only=False" not in shown
    assert not (tmp_path / "eval").exists()  # nothing half-written


def test_checkpoint_of_the_other_model_is_refused(evaluated, tmp_path):
    model, params, prepared, features, checkpoint, _, _ = evaluated
    other = next(m for m in MODELS if m != model)
    with pytest.raises(CheckpointError, match="architecture") as caught:
        evaluate(params, other, prepared, features, checkpoint, tmp_path / "eval")
    assert str(checkpoint) in str(caught.value)
    assert not (tmp_path / "eval").exists()

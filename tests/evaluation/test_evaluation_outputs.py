"""What evaluate writes (stages/evaluation/run.py) on really trained models: the submission and the
per-class and precision-recall files, the metrics without labelled soundscapes, and a damaged or
foreign best.pt refused without suggesting an unsafe load."""

from __future__ import annotations

import json
import math
import traceback

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from helpers import hand_f1, make_dataset
from stages.scoring import metrics
from stages.training.checkpoints import CheckpointError
from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import load_split, read_classes
from stages.evaluation.run import evaluate
from stages.birdclef.labels import NOCALL
from stages.models.factory import create_model
from evaluated_models import MODELS, label_sets, scores_of, small_data, tune_and_score_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert result["baselines"]["class_prior"].keys() == {"valid_map", "valid_loss"}
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

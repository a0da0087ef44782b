"""The metrics (stages/scoring/metrics.py) against scikit-learn and hand-worked cases: mAP, per-class
AP, LRAP, top-1, the BirdCLEF row-wise F1 and its `nocall` handling, precision-recall points."""

import math

import numpy as np
import pytest
from sklearn.metrics import (average_precision_score, f1_score, label_ranking_average_precision_score,
                             top_k_accuracy_score)

from stages.scoring.metrics import (birdclef_row_f1, birds_strings_to_sets, label_ranking_ap,
                                    label_sets_to_birds_strings, mean_average_precision,
                                    per_class_average_precision, predictions_to_label_sets, row_f1_per_row,
                                    top1_accuracy)


def soft_targets(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    """Primary labels at 1.0, some secondary labels at 0.5, the rest 0."""
    targets = np.zeros((rows, classes))
    targets[np.arange(rows), rng.integers(0, classes, rows)] = 1.0
    secondary = (rng.random((rows, classes)) < 0.1) & (targets == 0)
    targets[secondary] = 0.5
    return targets


@pytest.fixture
def random_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    targets = soft_targets(rng, rows=200, classes=12)
    targets[:, [3, 7]] = 0  # two classes with no positive at all
    scores = rng.random(targets.shape)
    return targets, scores


def test_map_is_sklearn_ap_averaged_over_positive_classes(random_case):
    targets, scores = random_case
    binary = targets > 0
    per_class = [average_precision_score(binary[:, c], scores[:, c])
                 for c in range(targets.shape[1]) if binary[:, c].any()]
    assert len(per_class) == 10
    assert mean_average_precision(targets, scores) == pytest.approx(np.mean(per_class))


def test_map_excludes_classes_without_positive(random_case):
    targets, scores = random_case
    # sklearn scores the 2 empty classes 0: averaging all 12 would scale the mean by 10/12.
    with pytest.warns(UserWarning, match="No positive class"):
        with_empty = average_precision_score(targets > 0, scores, average="macro")
    assert with_empty > 0
    assert mean_average_precision(targets, scores) == pytest.approx(with_empty * 12 / 10)


def test_map_counts_soft_targets_as_positive():
    targets = np.array([[0.5, 0.0], [0.0, 1.0], [0.0, 0.0]])
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])
    assert mean_average_precision(targets, scores) == 1.0


def test_map_needs_a_positive():
    with pytest.raises(ValueError):
        mean_average_precision(np.zeros((3, 2)), np.ones((3, 2)))


def test_per_class_average_precision(random_case):
    targets, scores = random_case
    names = [f"bird{c}" for c in range(targets.shape[1])]
    table = per_class_average_precision(targets, scores, names)
    assert list(table.columns) == ["class", "n_positive", "average_precision"]
    assert table["class"].tolist() == names
    assert table["n_positive"].tolist() == (targets > 0).sum(axis=0).tolist()
    assert table["average_precision"].isna().tolist() == [c in (3, 7) for c in range(12)]
    assert table.loc[0, "average_precision"] == pytest.approx(
        average_precision_score(targets[:, 0] > 0, scores[:, 0]))
    assert table["average_precision"].mean() == pytest.approx(
        mean_average_precision(targets, scores))


def test_lrap_is_sklearn_over_rows_with_a_positive():
    rng = np.random.default_rng(1)
    targets = soft_targets(rng, rows=50, classes=8)
    targets[:10] = 0  # rows with nothing to rank
    scores = rng.random(targets.shape)
    expected = label_ranking_average_precision_score(targets[10:] > 0, scores[10:])
    assert label_ranking_ap(targets, scores) == pytest.approx(expected)
    # sklearn alone would count each empty row as a perfect 1.0.
    assert label_ranking_average_precision_score(targets > 0, scores) > expected


def test_top1_accuracy():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.1, 0.2, 0.6], [0.3, 0.4, 0.3]])
    assert top1_accuracy(np.array([1, 0, 0, 2]), scores) == 0.5

    rng = np.random.default_rng(2)
    scores = rng.random((100, 6))
    primary = rng.integers(0, 6, 100)
    assert top1_accuracy(primary, scores) == pytest.approx(
        top_k_accuracy_score(primary, scores, k=1, labels=np.arange(6)))


def test_predictions_to_label_sets_threshold_is_inclusive_and_empty_is_nocall():
    scores = np.array([[0.5, 0.25, 0.75], [0.1, 0.2, 0.3], [0.5, 0.5, 0.0]])
    sets = predictions_to_label_sets(scores, ["amerob", "rewbla", "norcar"], threshold=0.5)
    assert sets == [{"amerob", "norcar"}, {"nocall"}, {"amerob", "rewbla"}]


def test_row_f1_all_nocall_predicted_nocall():
    truth = [{"nocall"}] * 4
    assert birdclef_row_f1(truth, [{"nocall"}] * 4) == 1.0


def test_row_f1_all_nocall_predicted_a_bird():
    # Each row: P={amerob}, T={nocall}, no overlap -> F1 0.
    truth = [{"nocall"}] * 3
    assert birdclef_row_f1(truth, [{"amerob"}] * 3) == 0.0


def test_row_f1_mixed_rows():
    truth = [{"a", "b"}, {"nocall"}, {"a"}]
    pred = [{"a"}, {"nocall"}, {"b", "c"}]
    # Row 1: 2*1/(1+2) = 2/3.  Row 2: 2*1/(1+1) = 1.  Row 3: no overlap -> 0.
    # Mean: (2/3 + 1 + 0) / 3 = 5/9.
    assert birdclef_row_f1(truth, pred) == pytest.approx(5 / 9)


def test_row_f1_nocall_is_an_ordinary_label():
    # P={nocall, a}, T={nocall}: 2*1/(2+1) = 2/3; predicting nocall next to a bird costs precision.
    assert birdclef_row_f1([{"nocall"}], [{"nocall", "a"}]) == pytest.approx(2 / 3)


def test_row_f1_empty_prediction_scores_zero():
    truth = [{"nocall"}, {"a"}, {"a"}]
    pred = [set(), set(), {"a"}]
    # Rows 1 and 2 predict nothing against a non-empty truth -> 0; row 3 is exact -> 1.
    assert birdclef_row_f1(truth, pred) == pytest.approx(1 / 3)


def test_row_f1_partial_overlap():
    # |P∩T| = |{b, c}| = 2, |P| = |T| = 3: 2*2/(3+3) = 2/3.
    assert birdclef_row_f1([{"a", "b", "c"}], [{"b", "c", "d"}]) == pytest.approx(2 / 3)


def test_row_f1_matches_per_row_formula_on_random_sets():
    rng = np.random.default_rng(3)
    labels = ["nocall", "a", "b", "c", "d", "e"]

    def random_set(min_size: int) -> set[str]:
        size = rng.integers(min_size, 4)
        return set(rng.choice(labels, size=size, replace=False).tolist())

    truth = [random_set(1) for _ in range(300)]
    pred = [random_set(0) for _ in range(300)]
    by_hand = [2 * len(p & t) / (len(p) + len(t)) for p, t in zip(pred, truth)]
    assert birdclef_row_f1(truth, pred) == pytest.approx(np.mean(by_hand))


def test_row_f1_rejects_length_mismatch():
    with pytest.raises(ValueError):
        birdclef_row_f1([{"nocall"}], [{"nocall"}, {"a"}])


def test_birds_strings_round_trip():
    strings = ["nocall", "amerob rewbla", "norcar"]
    sets = birds_strings_to_sets(strings)
    assert sets == [{"nocall"}, {"amerob", "rewbla"}, {"norcar"}]
    assert label_sets_to_birds_strings(sets) == strings
    assert label_sets_to_birds_strings([{"rewbla", "amerob"}]) == ["amerob rewbla"]
    assert birds_strings_to_sets(label_sets_to_birds_strings(sets)) == sets


def test_row_f1_on_parsed_birds_column():
    truth = birds_strings_to_sets(["nocall", "amerob rewbla"])
    pred = predictions_to_label_sets(np.array([[0.1, 0.2], [0.9, 0.1]]), ["amerob", "rewbla"],
                                     threshold=0.5)
    # Row 1: {nocall} vs {nocall} -> 1.  Row 2: P={amerob}, T={amerob, rewbla} -> 2/3.
    assert math.isclose(birdclef_row_f1(truth, pred), (1 + 2 / 3) / 2)


def test_row_f1_both_sets_empty_counts_as_agreement():
    # Never happens in the competition (truth is at least {'nocall'}); equal sets score 1.
    assert birdclef_row_f1([set(), {"a"}], [set(), set()]) == pytest.approx(1 / 2)


def test_map_and_per_class_with_a_single_present_class():
    targets = np.array([[1.0, 0.0], [0.0, 0.0], [0.5, 0.0]])
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])
    # Class 0 ranks pos (0.9), neg (0.2), pos (0.1): precisions 1 and 2/3, AP = (1 + 2/3)/2.
    assert mean_average_precision(targets, scores) == pytest.approx(5 / 6)
    table = per_class_average_precision(targets, scores, ["a", "b"])
    assert table["average_precision"].iloc[0] == pytest.approx(5 / 6)
    assert math.isnan(table["average_precision"].iloc[1])


# ------------------------------------------------------------------------------- row_f1_per_row

def test_row_f1_per_row_by_hand():
    truth = [{"a", "b"}, {"nocall"}, {"a"}, {"a", "b", "c"}, {"nocall"}, {"a"}, set()]
    pred = [{"a"}, {"nocall"}, {"b", "c"}, {"b", "c", "d"}, {"nocall", "a"}, set(), set()]
    # 2|T&P| / (|T| + |P|): 2/3, 1, 0, 4/6, 2/3, 0 (nothing predicted), 1 (both empty: equal).
    expected = [2 / 3, 1.0, 0.0, 2 / 3, 2 / 3, 0.0, 1.0]
    np.testing.assert_allclose(row_f1_per_row(truth, pred), expected)
    assert row_f1_per_row(truth, pred).dtype == float


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_f1_per_row_mean_is_sklearn_samples_f1(seed):
    """birdclef_row_f1 is sklearn's samples-averaged F1; the per-row values must average to it."""
    rng = np.random.default_rng(seed)
    labels = ["nocall", "amerob", "norcar", "rewbla", "bkcchi", "houspa"]

    def random_set(min_size: int) -> set[str]:
        return set(rng.choice(labels, size=rng.integers(min_size, 5), replace=False).tolist())

    truth = [random_set(1) for _ in range(400)]
    pred = [random_set(0) for _ in range(400)]
    per_row = row_f1_per_row(truth, pred)
    assert per_row.shape == (400,) and ((0 <= per_row) & (per_row <= 1)).all()
    assert per_row.mean() == pytest.approx(birdclef_row_f1(truth, pred), abs=1e-12)
    # ... and each row is sklearn's binary F1 of that row's multi-hot vectors (truth is never empty).
    hot_truth = np.array([[label in row for label in labels] for row in truth])
    hot_pred = np.array([[label in row for label in labels] for row in pred])
    np.testing.assert_allclose(per_row, [f1_score(t, p) for t, p in zip(hot_truth, hot_pred)])
    assert per_row.mean() == pytest.approx(f1_score(hot_truth, hot_pred, average="samples"), abs=1e-12)


def test_row_f1_per_row_rejects_length_mismatch():
    with pytest.raises(ValueError):
        row_f1_per_row([{"nocall"}], [{"nocall"}, {"a"}])

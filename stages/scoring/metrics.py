"""Evaluation metrics: ranking metrics on clip scores and the BirdCLEF 2021 row-wise F1.

Targets may be soft (secondary labels weighted below 1); every metric here treats a class
as present wherever its target is > 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score,
                             label_ranking_average_precision_score, precision_recall_curve)
from sklearn.preprocessing import MultiLabelBinarizer

from stages.birdclef.labels import NOCALL


def binarize_targets(targets: np.ndarray) -> np.ndarray:
    return (np.asarray(targets) > 0).astype(int)


def _classes_with_positive(binary_targets: np.ndarray) -> np.ndarray:
    return binary_targets.any(axis=0)


def mean_average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Macro average precision over the classes that have at least one positive.

    Classes without a positive are left out: sklearn would score them 0 (with a warning),
    which would make the result depend on which species happen to be in the split.
    """
    binary = binarize_targets(targets)
    present = _classes_with_positive(binary)
    if not present.any():
        raise ValueError("mean average precision needs at least one positive target")
    return float(average_precision_score(binary[:, present], np.asarray(scores)[:, present],
                                         average="macro"))


def per_class_average_precision(targets: np.ndarray, scores: np.ndarray,
                                class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: its positive count and average precision (NaN with no positive)."""
    binary = binarize_targets(targets)
    scores = np.asarray(scores)
    if binary.shape[1] != len(class_names):
        raise ValueError(f"{binary.shape[1]} target columns but {len(class_names)} class names")
    present = _classes_with_positive(binary)
    precision = np.full(len(class_names), np.nan)
    if present.any():
        precision[present] = average_precision_score(binary[:, present], scores[:, present],
                                                      average=None)
    return pd.DataFrame({
        "class": list(class_names),
        "n_positive": binary.sum(axis=0),
        "average_precision": precision,
    })


def label_ranking_ap(targets: np.ndarray, scores: np.ndarray) -> float:
    """Label ranking average precision over the rows that have at least one positive.

    sklearn scores a row without positives as 1.0, which would reward every model equally
    for clips with nothing to rank; such rows are dropped instead.
    """
    binary = binarize_targets(targets)
    labelled = binary.any(axis=1)
    if not labelled.any():
        raise ValueError("label ranking average precision needs a row with a positive target")
    return float(label_ranking_average_precision_score(binary[labelled],
                                                       np.asarray(scores)[labelled]))


def top1_accuracy(primary_index: np.ndarray, scores: np.ndarray) -> float:
    """Share of rows whose highest-scoring class is the primary label."""
    return float(accuracy_score(primary_index, np.asarray(scores).argmax(axis=1)))


def predictions_to_label_sets(scores: np.ndarray, class_names: Sequence[str],
                              threshold: float) -> list[set[str]]:
    """Per row, the classes scoring >= threshold; a row where none does predicts nocall."""
    scores = np.asarray(scores)
    if scores.shape[1] != len(class_names):
        raise ValueError(f"{scores.shape[1]} score columns but {len(class_names)} class names")
    names = np.asarray(class_names, dtype=object)
    return [set(names[row >= threshold]) or {NOCALL} for row in scores]


def birdclef_row_f1(true_sets: Sequence[set[str]], pred_sets: Sequence[set[str]]) -> float:
    """The BirdCLEF 2021 score: F1 between predicted and true label sets, averaged over rows.

    `nocall` is an ordinary label (a column of the multi-hot matrix). An empty prediction
    predicts nothing, so its row scores 0 against any non-empty truth. In the competition the
    truth is never empty (at least {'nocall'}); were both sets empty they would be equal, hence
    zero_division=1.0 for that row (it does not touch any other row).
    """
    if len(true_sets) != len(pred_sets):
        raise ValueError(f"{len(true_sets)} true rows but {len(pred_sets)} predicted rows")
    binarizer = MultiLabelBinarizer().fit([*true_sets, *pred_sets])
    return float(f1_score(_multi_hot(binarizer, true_sets), _multi_hot(binarizer, pred_sets),
                          average="samples", zero_division=1.0))


def row_f1_per_row(true_sets: Sequence[set[str]], pred_sets: Sequence[set[str]]) -> np.ndarray:
    """Each row's F1 between its predicted and true label sets, 2|T & P| / (|T| + |P|); the mean is
    birdclef_row_f1 (two empty sets count as equal, as there)."""
    if len(true_sets) != len(pred_sets):
        raise ValueError(f"{len(true_sets)} true rows but {len(pred_sets)} predicted rows")
    return np.array([2 * len(t & p) / (len(t) + len(p)) if t or p else 1.0
                     for t, p in zip(true_sets, pred_sets)], dtype=float)


def _multi_hot(binarizer: MultiLabelBinarizer, label_sets: Sequence[set[str]]) -> np.ndarray:
    # sklearn reads a one-column matrix (e.g. every set is {'nocall'}) as binary, not
    # multilabel, and refuses average='samples'; an all-zero column changes no row's F1.
    return np.pad(binarizer.transform(label_sets), ((0, 0), (0, 1)))


def birds_strings_to_sets(strings: Iterable[str]) -> list[set[str]]:
    """Parse the competition's `birds` column: space-separated codes, or 'nocall'."""
    return [set(text.split()) for text in strings]


def label_sets_to_birds_strings(label_sets: Iterable[set[str]]) -> list[str]:
    """Format label sets as the submission's `birds` column (sorted, space-joined)."""
    return [" ".join(sorted(labels)) for labels in label_sets]


PR_CURVE_POINTS = 200  # enough for a smooth curve; BirdCLEF valid has millions of (chunk, class) pairs


def precision_recall_points(targets: np.ndarray, scores: np.ndarray) -> list[dict]:
    """The micro-averaged precision-recall curve over all (chunk, class) pairs, thinned evenly to at
    most PR_CURVE_POINTS points, as rows {recall, precision, threshold} (DVCLive's PR format)."""
    binary = binarize_targets(targets).ravel()
    if not binary.any():
        return []
    precision, recall, thresholds = precision_recall_curve(binary, np.asarray(scores).ravel())
    keep = np.unique(np.linspace(0, len(thresholds) - 1, min(PR_CURVE_POINTS, len(thresholds))).round().astype(int))
    return [{"recall": float(recall[i]), "precision": float(precision[i]), "threshold": float(thresholds[i])}
            for i in keep]

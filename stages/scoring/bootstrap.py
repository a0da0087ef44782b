"""Bootstrap percentile intervals for evaluate's headline numbers: valid mAP resampled by recording
(chunks of one recording are not independent), soundscape row-wise F1 resampled by window."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stages.scoring import metrics


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n_units: int, samples: int, level: float,
                       seed: int) -> tuple[float, float]:
    """Percentile interval of `statistic(drawn unit indices)` over `samples` draws with replacement."""
    rng = np.random.default_rng(seed)
    return percentile_interval([statistic(rng.integers(0, n_units, n_units)) for _ in range(samples)], level)


def percentile_interval(values, level: float) -> tuple[float, float]:
    """The central `level` share of bootstrap `values` (draws with no value, NaN, left out)."""
    low, high = np.nanpercentile(np.asarray(values, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def map_interval(targets: np.ndarray, scores: np.ndarray, recordings: np.ndarray, samples: int, level: float,
                 seed: int) -> tuple[float, float]:
    """Bootstrap interval of valid mAP, drawing whole recordings (their chunks are not independent).

    A draw is a count per recording; every chunk weighs its recording's count, which is the same as
    copying the drawn chunks, and all draws are scored at once by weighted_map (BirdCLEF's valid split
    is too large for a scikit-learn call per draw: 10 s each for 12,000 chunks x 397 classes).
    """
    _, recording_of_chunk = np.unique(recordings, return_inverse=True)
    n_recordings = recording_of_chunk.max() + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_recordings, (samples, n_recordings))
    counts = np.stack([np.bincount(draw, minlength=n_recordings) for draw in draws])
    return percentile_interval(weighted_map(targets, scores, counts[:, recording_of_chunk]), level)


WEIGHT_ROWS_PER_BLOCK = 128  # bounds memory: a block holds 4 arrays of rows x chunks float64


def weighted_map(targets: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """metrics.mean_average_precision for each row of chunk `weights` [draws, chunks], as if each chunk
    were repeated weight times: per class, AP = sum over positives of weight x precision at the end of
    the positive's tie group, over the positive weight; the mean skips classes with no positive."""
    binary = metrics.binarize_targets(targets).astype(bool)
    per_class = np.full((len(weights), binary.shape[1]), np.nan)
    for c in np.flatnonzero(binary.any(axis=0)):
        order = np.argsort(-scores[:, c], kind="stable")
        ranked = scores[order, c]
        ends = np.r_[np.flatnonzero(np.diff(ranked) != 0), len(ranked) - 1]
        positives = np.flatnonzero(binary[order, c])
        group_end = ends[np.searchsorted(ends, positives)]  # tied scores share one precision
        for start in range(0, len(weights), WEIGHT_ROWS_PER_BLOCK):
            w = weights[start:start + WEIGHT_ROWS_PER_BLOCK][:, order].astype(float)
            seen = np.cumsum(w, axis=1)[:, group_end]
            hits = np.cumsum(w * binary[order, c], axis=1)
            precision = hits[:, group_end] / np.where(seen > 0, seen, 1)
            positive_weight = hits[:, -1]
            with np.errstate(invalid="ignore", divide="ignore"):
                ap = (w[:, positives] * precision).sum(axis=1) / positive_weight
            per_class[start:start + WEIGHT_ROWS_PER_BLOCK, c] = np.where(positive_weight > 0, ap, np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(per_class, axis=1) if per_class.size else np.full(len(weights), np.nan)


def f1_interval(truth: list[set[str]], predicted: list[set[str]], samples: int, level: float,
                seed: int) -> tuple[float, float]:
    """Bootstrap interval of row-wise F1, drawing windows (the metric is a mean over windows)."""
    per_row = metrics.row_f1_per_row(truth, predicted)
    return bootstrap_interval(lambda rows: float(per_row[rows].mean()), len(per_row), samples, level, seed)

"""How evaluate turns scores into the numbers a reader can trust: the call threshold, baselines and
bootstrap intervals.

Threshold rule. The valid split holds only bird chunks (short-audio recordings have no `nocall`), so a
threshold tuned there always calls a bird. Instead the labelled soundscapes, which do contain `nocall`
windows, are divided by whole file: in sorted order, files are taken alternately for tuning at the
rate `evaluate.tune_fraction` (0.5: every other file), the rest are scored. The threshold is the
value of `evaluate.threshold_grid` with the best BirdCLEF row-wise F1 on the tuning files (ties: the
smaller), and the reported F1 comes from the scored files only. With a single labelled soundscape
the file is both tuned and scored, and the rule says so.

Baselines, scored exactly like a model: `all_nocall` predicts `nocall` in every window;
`class_prior` gives every chunk each class's share of the training chunks as its score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stages import metrics


@dataclass(frozen=True)
class SoundscapeSplit:
    tune: np.ndarray    # bool per window: its file tunes the threshold
    score: np.ndarray   # bool per window: its file is scored
    rule: str


def soundscape_file(row_id: str) -> str:
    """The file part of a competition row id `<audio_id>_<site>_<seconds>`."""
    return row_id.rsplit("_", 1)[0]


def split_soundscapes(row_ids: list[str], tune_fraction: float) -> SoundscapeSplit:
    files = np.array([soundscape_file(row_id) for row_id in row_ids])
    unique = sorted(set(files))
    if len(unique) == 1:
        everywhere = np.ones(len(files), dtype=bool)
        return SoundscapeSplit(everywhere, everywhere,
                               "tuned and scored on the one labelled soundscape (no file to hold out)")
    n_tune = min(len(unique) - 1, max(1, round(tune_fraction * len(unique))))
    tune_files = {unique[int(i)] for i in np.floor(np.arange(n_tune) / tune_fraction).clip(max=len(unique) - 1)}
    tune = np.isin(files, sorted(tune_files))
    return SoundscapeSplit(tune, ~tune, f"best row-wise F1 on {n_tune} of {len(unique)} labelled soundscape "
                                        f"files (taken alternately in sorted order); scored on the other "
                                        f"{len(unique) - n_tune}")


def choose_call_threshold(truth: list[set[str]], scores: np.ndarray, classes: list[str],
                          grid: list[float]) -> float:
    """The grid value with the best row-wise F1 against `truth` (ties: the smaller threshold)."""
    candidates = np.unique(np.asarray(grid, dtype=float))
    f1 = [metrics.birdclef_row_f1(truth, metrics.predictions_to_label_sets(scores, classes, t))
          for t in candidates]
    return float(candidates[int(np.argmax(f1))])


def class_prior_scores(train_targets: np.ndarray, n_rows: int) -> np.ndarray:
    """Each class's share of training chunks (a positive target) as every row's score."""
    prior = metrics.binarize_targets(train_targets).mean(axis=0)
    return np.tile(prior.astype(np.float32), (n_rows, 1))


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

"""How evaluate turns soundscape scores into answers: the call threshold, and the baselines.

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

from dataclasses import dataclass

import numpy as np

from stages.scoring import metrics


@dataclass(frozen=True)
class SoundscapeSplit:
    tune: np.ndarray    # bool per window: its file tunes the threshold
    score: np.ndarray   # bool per window: its file is scored
    rule: str


def split_soundscapes(window_files: list[str], tune_fraction: float) -> SoundscapeSplit:
    """Tuning and scoring windows, by whole files: `window_files[i]` is the audio file window i was
    cut from (never parsed out of its row id, whose format the labels file decides)."""
    files = np.array(window_files)
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

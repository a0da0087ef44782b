"""stages/scoring/threshold.py against hand computations: the soundscape tune/score split by file,
the call threshold on row-wise F1 and the class-prior scores."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import hand_f1
from stages.scoring import metrics
from stages.scoring.threshold import choose_call_threshold, class_prior_scores, split_soundscapes
from stages.birdclef.labels import NOCALL

GRID = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
# Soundscape files as the competition names them (<audio_id>_<site>); sorted as strings, so 10534 < 2782.
FILES = ["10534_SSW", "11254_COR", "18003_COR", "2782_SSW", "7019_COR"]


def row_ids(files: list[str], windows: list[int]) -> list[str]:
    """Row ids `<file>_<seconds>` of `windows[i]` 5 s windows of files[i], files interleaved so that a
    file's windows are not contiguous (the split must go by file, not by position)."""
    rows = [(k, f"{file}_{5 * (k + 1)}") for file, n in zip(files, windows) for k in range(n)]
    return [row for _, row in sorted(rows, key=lambda item: item[0])]


def files_of(ids: list[str]) -> list[str]:
    """The file each window of `ids` was cut from (what prepare records; here read back from the ids)."""
    return [row.rsplit("_", 1)[0] for row in ids]


# -------------------------------------------------------------------------------- split_soundscapes

def test_one_file_is_tuned_and_scored_and_the_rule_says_so():
    ids = row_ids(FILES[:1], [12])
    for fraction in (0.25, 0.5, 0.75):
        split = split_soundscapes(files_of(ids), fraction)
        assert split.tune.tolist() == split.score.tolist() == [True] * 12
        assert "one labelled soundscape" in split.rule and "tuned and scored" in split.rule


# (files, tune_fraction) -> the tuning files, worked out by hand: round(fraction x files) of them
# (at least 1, at most all but one), spread over the sorted files at the rate of the fraction.
EXPECTED_TUNE = {
    (2, 0.25): [0], (2, 0.5): [0], (2, 0.75): [0],
    (4, 0.25): [0], (4, 0.5): [0, 2], (4, 0.75): [0, 1, 2],
    (5, 0.25): [0], (5, 0.5): [0, 2], (5, 0.75): [0, 1, 2, 4],  # round(2.5) = 2; round(3.75) = 4
}


@pytest.mark.parametrize("n_files, fraction", sorted(EXPECTED_TUNE))
def test_split_goes_by_whole_files_alternately(n_files, fraction):
    files = FILES[:n_files]
    windows = [3, 5, 2, 4, 6][:n_files]
    ids = row_ids(files, windows)
    split = split_soundscapes(files_of(ids), fraction)
    of_row = np.array([row.rsplit("_", 1)[0] for row in ids])

    # Disjoint, and together every window.
    assert not (split.tune & split.score).any()
    assert (split.tune | split.score).all()
    # A file is never split between tuning and scoring.
    for file in files:
        assert len(set(split.tune[of_row == file])) == 1, file
    tuned = sorted(set(of_row[split.tune]))
    assert tuned == [sorted(files)[i] for i in EXPECTED_TUNE[(n_files, fraction)]]
    assert split.tune.sum() == sum(n for f, n in zip(files, windows) if f in tuned)
    assert split.score.any()  # with two files or more, something is always held out
    n_tune = len(tuned)
    assert f"{n_tune} of {n_files}" in split.rule and f"other {n_files - n_tune}" in split.rule


def test_split_does_not_depend_on_the_row_order():
    ids = row_ids(FILES, [3, 5, 2, 4, 6])
    order = np.random.default_rng(0).permutation(len(ids))
    split = split_soundscapes(files_of(ids), 0.5)
    shuffled = split_soundscapes(files_of([ids[i] for i in order]), 0.5)
    assert shuffled.tune.tolist() == split.tune[order].tolist()
    assert shuffled.rule == split.rule


def test_half_of_the_files_tune_at_the_default_fraction():
    """Every other sorted file tunes: with 4 files, the 1st and 3rd."""
    ids = row_ids(FILES[:4], [2, 2, 2, 2])
    split = split_soundscapes(files_of(ids), 0.5)
    tuned = {row.rsplit("_", 1)[0] for row, t in zip(ids, split.tune) if t}
    assert tuned == {"10534_SSW", "18003_COR"}


# ---------------------------------------------------------------------------- choose_call_threshold

def nocall_half(seed: int = 0):
    """40 windows, half `nocall` whose every class scores low (< 0.3), half one bird scored 0.6-0.9
    (its other classes low too)."""
    rng = np.random.default_rng(seed)
    classes = ["amerob", "norcar", "rewbla"]
    n = 40
    scores = rng.uniform(0.01, 0.29, size=(n, len(classes)))
    truth = []
    for i in range(n):
        if i % 2:
            truth.append({NOCALL})
        else:
            bird = i % 3
            scores[i, bird] = rng.uniform(0.6, 0.9)
            truth.append({classes[bird]})
    return truth, scores, classes


def test_threshold_can_say_nocall():
    truth, scores, classes = nocall_half()
    threshold = choose_call_threshold(truth, scores, classes, GRID)
    # By hand: every grid value in (max low score, min high score] gives F1 1; the smallest is 0.3.
    by_hand = {t: hand_f1(truth, [set(np.array(classes)[row >= t]) or {NOCALL} for row in scores]) for t in GRID}
    best = max(by_hand.values())
    assert best == 1.0
    assert threshold == min(t for t, f1 in by_hand.items() if f1 == best) == 0.3
    predicted = metrics.predictions_to_label_sets(scores, classes, threshold)
    assert [p == {NOCALL} for p in predicted] == [t == {NOCALL} for t in truth]
    # A low threshold would call a bird in every window and lose the nocall half.
    assert by_hand[0.05] < 0.6


def test_threshold_is_the_best_row_f1_when_nothing_is_perfect():
    rng = np.random.default_rng(1)
    classes = ["a", "b", "c", "d"]
    scores = rng.random((60, 4))
    truth = [set(np.array(classes)[rng.random(4) < 0.3]) or {NOCALL} for _ in range(60)]
    threshold = choose_call_threshold(truth, scores, classes, GRID)
    by_hand = {t: hand_f1(truth, [set(np.array(classes)[row >= t]) or {NOCALL} for row in scores]) for t in GRID}
    assert by_hand[threshold] == pytest.approx(max(by_hand.values()))
    assert all(by_hand[t] < by_hand[threshold] for t in GRID if t < threshold)


def test_threshold_ties_go_to_the_smaller():
    classes = ["a", "b"]
    # No score in [0.4, 0.6]: 0.4, 0.5 and 0.6 make the same predictions, all perfect.
    scores = np.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.3]])
    truth = [{"a"}, {"b"}, {NOCALL}]
    assert choose_call_threshold(truth, scores, classes, [0.6, 0.5, 0.4, 0.95]) == 0.4


def test_all_zero_scores_predict_nocall_at_any_threshold():
    truth = [{NOCALL}, {"a"}, {NOCALL}, {NOCALL}]
    threshold = choose_call_threshold(truth, np.zeros((4, 2)), ["a", "b"], GRID)
    assert threshold == GRID[0]  # every grid value ties at 3/4
    assert metrics.predictions_to_label_sets(np.zeros((4, 2)), ["a", "b"], threshold) == [{NOCALL}] * 4


# ------------------------------------------------------------------------------- class_prior_scores

def test_class_prior_is_the_training_prevalence():
    # Soft targets: a secondary label (0.5) counts as present, as in every metric.
    train = np.array([[1.0, 0.0, 0.0, 0.0],
                      [0.5, 1.0, 0.0, 0.0],
                      [0.0, 1.0, 0.0, 0.0],
                      [0.0, 0.5, 0.0, 1.0]])
    scores = class_prior_scores(train, 3)
    assert scores.shape == (3, 4)
    np.testing.assert_allclose(scores, [[2 / 4, 3 / 4, 0.0, 1 / 4]] * 3)

    rng = np.random.default_rng(0)
    train = (rng.random((500, 7)) < np.linspace(0.05, 0.6, 7)) * rng.choice([0.5, 1.0], size=(500, 7))
    scores = class_prior_scores(train, 10)
    np.testing.assert_allclose(scores[4], [(train[:, c] > 0).sum() / 500 for c in range(7)], rtol=1e-6)
    assert (scores == scores[0]).all()

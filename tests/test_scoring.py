"""stages/scoring.py against hand computations: the soundscape tune/score split by file, the call
threshold on row-wise F1, the class-prior scores and the bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from stages import metrics, scoring
from stages.labels import NOCALL

GRID = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
# Soundscape files as the competition names them (<audio_id>_<site>); sorted as strings, so 10534 < 2782.
FILES = ["10534_SSW", "11254_COR", "18003_COR", "2782_SSW", "7019_COR"]


def row_ids(files: list[str], windows: list[int]) -> list[str]:
    """Row ids `<file>_<seconds>` of `windows[i]` 5 s windows of files[i], files interleaved so that a
    file's windows are not contiguous (the split must go by file, not by position)."""
    rows = [(k, f"{file}_{5 * (k + 1)}") for file, n in zip(files, windows) for k in range(n)]
    return [row for _, row in sorted(rows, key=lambda item: item[0])]


def hand_f1(truth: list[set[str]], predicted: list[set[str]]) -> float:
    return float(np.mean([2 * len(t & p) / (len(t) + len(p)) for t, p in zip(truth, predicted)]))


# -------------------------------------------------------------------------------- split_soundscapes

def test_one_file_is_tuned_and_scored_and_the_rule_says_so():
    ids = row_ids(FILES[:1], [12])
    for fraction in (0.25, 0.5, 0.75):
        split = scoring.split_soundscapes(ids, fraction)
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
    split = scoring.split_soundscapes(ids, fraction)
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
    split = scoring.split_soundscapes(ids, 0.5)
    shuffled = scoring.split_soundscapes([ids[i] for i in order], 0.5)
    assert shuffled.tune.tolist() == split.tune[order].tolist()
    assert shuffled.rule == split.rule


def test_half_of_the_files_tune_at_the_default_fraction():
    """Every other sorted file tunes: with 4 files, the 1st and 3rd."""
    ids = row_ids(FILES[:4], [2, 2, 2, 2])
    split = scoring.split_soundscapes(ids, 0.5)
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
    threshold = scoring.choose_call_threshold(truth, scores, classes, GRID)
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
    threshold = scoring.choose_call_threshold(truth, scores, classes, GRID)
    by_hand = {t: hand_f1(truth, [set(np.array(classes)[row >= t]) or {NOCALL} for row in scores]) for t in GRID}
    assert by_hand[threshold] == pytest.approx(max(by_hand.values()))
    assert all(by_hand[t] < by_hand[threshold] for t in GRID if t < threshold)


def test_threshold_ties_go_to_the_smaller():
    classes = ["a", "b"]
    # No score in [0.4, 0.6]: 0.4, 0.5 and 0.6 make the same predictions, all perfect.
    scores = np.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.3]])
    truth = [{"a"}, {"b"}, {NOCALL}]
    assert scoring.choose_call_threshold(truth, scores, classes, [0.6, 0.5, 0.4, 0.95]) == 0.4


def test_all_zero_scores_predict_nocall_at_any_threshold():
    truth = [{NOCALL}, {"a"}, {NOCALL}, {NOCALL}]
    threshold = scoring.choose_call_threshold(truth, np.zeros((4, 2)), ["a", "b"], GRID)
    assert threshold == GRID[0]  # every grid value ties at 3/4
    assert metrics.predictions_to_label_sets(np.zeros((4, 2)), ["a", "b"], threshold) == [{NOCALL}] * 4


# ------------------------------------------------------------------------------- class_prior_scores

def test_class_prior_is_the_training_prevalence():
    # Soft targets: a secondary label (0.5) counts as present, as in every metric.
    train = np.array([[1.0, 0.0, 0.0, 0.0],
                      [0.5, 1.0, 0.0, 0.0],
                      [0.0, 1.0, 0.0, 0.0],
                      [0.0, 0.5, 0.0, 1.0]])
    scores = scoring.class_prior_scores(train, 3)
    assert scores.shape == (3, 4)
    np.testing.assert_allclose(scores, [[2 / 4, 3 / 4, 0.0, 1 / 4]] * 3)

    rng = np.random.default_rng(0)
    train = (rng.random((500, 7)) < np.linspace(0.05, 0.6, 7)) * rng.choice([0.5, 1.0], size=(500, 7))
    scores = scoring.class_prior_scores(train, 10)
    np.testing.assert_allclose(scores[4], [(train[:, c] > 0).sum() / 500 for c in range(7)], rtol=1e-6)
    assert (scores == scores[0]).all()


# ------------------------------------------------------------------------------ bootstrap_interval

def mean_of(data: np.ndarray):
    return lambda units: float(data[units].mean())


def test_bootstrap_interval_contains_the_estimate_and_matches_the_normal_width():
    data = np.random.default_rng(0).normal(3.0, 2.0, 400)
    low, high = scoring.bootstrap_interval(mean_of(data), len(data), 2000, 0.95, seed=1)
    assert low < data.mean() < high
    # The 95% interval of a mean is about +-1.96 standard errors wide.
    normal_width = 2 * 1.96 * data.std(ddof=1) / np.sqrt(len(data))
    assert high - low == pytest.approx(normal_width, rel=0.15)
    # A lower level gives a narrower interval inside it.
    low_50, high_50 = scoring.bootstrap_interval(mean_of(data), len(data), 2000, 0.5, seed=1)
    assert low < low_50 < data.mean() < high_50 < high


def test_bootstrap_interval_is_reproducible_with_a_seed():
    data = np.random.default_rng(0).normal(size=100)
    first = scoring.bootstrap_interval(mean_of(data), len(data), 300, 0.95, seed=7)
    assert scoring.bootstrap_interval(mean_of(data), len(data), 300, 0.95, seed=7) == first
    assert scoring.bootstrap_interval(mean_of(data), len(data), 300, 0.95, seed=8) != first


def test_bootstrap_interval_narrows_with_more_data():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 2000):
        data = rng.normal(size=n)
        low, high = scoring.bootstrap_interval(mean_of(data), n, 1000, 0.95, seed=0)
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # sqrt(2000 / 50) = 6.3


def test_bootstrap_draws_n_units_with_replacement():
    seen = []

    def statistic(units: np.ndarray) -> float:
        seen.append(units.copy())
        return float(len(units))

    scoring.bootstrap_interval(statistic, 10, 200, 0.95, seed=0)
    assert len(seen) == 200
    assert all(len(units) == 10 and units.min() >= 0 and units.max() < 10 for units in seen)
    assert any(len(set(units.tolist())) < 10 for units in seen)  # repeats: with replacement
    assert set(np.concatenate(seen).tolist()) == set(range(10))


# ------------------------------------------------------------------------------------- map_interval

def recordings_case(seed: int = 0):
    """12 recordings of 1 to 5 chunks; chunks of a recording share its label (weak labels)."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 2, 3]
    recordings = np.repeat([f"XC{r:03d}" for r in range(len(sizes))], sizes)
    labels = np.repeat(np.arange(len(sizes)) % 3, sizes)
    targets = np.eye(3)[labels]
    scores = np.clip(targets * 0.4 + rng.random(targets.shape) * 0.6, 0, 1)
    return targets, scores, recordings


def test_map_interval_draws_whole_recordings(monkeypatch):
    targets, scores, recordings = recordings_case()
    drawn = []
    real = scoring.weighted_map

    def spy(t, s, weights):
        drawn.append(weights)
        return real(t, s, weights)

    monkeypatch.setattr(scoring, "weighted_map", spy)
    scoring.map_interval(targets, scores, recordings, samples=100, level=0.95, seed=0)
    (weights,) = drawn
    assert weights.shape == (100, len(recordings))
    ids = sorted(set(recordings))
    for draw in weights:
        copies = []
        for recording in ids:
            of_recording = draw[recordings == recording]
            assert len(set(of_recording.tolist())) == 1, "a recording was drawn without all its chunks"
            copies.append(of_recording[0])
        assert sum(copies) == len(ids)  # as many recordings drawn as there are


def test_weighted_map_equals_mean_average_precision_on_repeated_chunks():
    """The vectorised bootstrap statistic against scikit-learn on the chunks copied weight times, with
    tied scores, soft targets, zero weights and classes that lose every positive."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        n, c = int(rng.integers(5, 60)), int(rng.integers(1, 6))
        targets = (rng.random((n, c)) < 0.3) * rng.choice([0.5, 1.0], (n, c))
        scores = np.round(rng.random((n, c)), 1)  # one decimal: many ties
        weights = rng.integers(0, 3, (4, n))
        got = scoring.weighted_map(targets, scores, weights)
        for draw, value in zip(weights, got):
            rows = np.repeat(np.arange(n), draw)
            if not (targets[rows] > 0).any():
                assert np.isnan(value)
                continue
            assert value == pytest.approx(metrics.mean_average_precision(targets[rows], scores[rows]), abs=1e-12)


def test_map_interval_contains_the_estimate_and_is_reproducible():
    targets, scores, recordings = recordings_case()
    point = metrics.mean_average_precision(targets, scores)
    low, high = scoring.map_interval(targets, scores, recordings, 200, 0.95, seed=3)
    assert 0 <= low <= point <= high <= 1
    assert low < high
    assert scoring.map_interval(targets, scores, recordings, 200, 0.95, seed=3) == (low, high)


def test_map_interval_of_a_perfect_ranking_is_one():
    targets, _, recordings = recordings_case()
    assert scoring.map_interval(targets, targets * 0.9 + 0.05, recordings, 100, 0.95, seed=0) == (1.0, 1.0)


def test_copies_of_chunks_do_not_narrow_the_map_interval():
    """Copies of a recording's chunks carry no new information: drawing recordings sees that, drawing
    chunks would not. 10 copies of every chunk give the interval of the single chunks, not a narrower one."""
    targets, scores, recordings = recordings_case()
    single = scoring.map_interval(targets, scores, recordings, 100, 0.95, seed=0)
    copies = scoring.map_interval(np.repeat(targets, 10, axis=0), np.repeat(scores, 10, axis=0),
                                  np.repeat(recordings, 10), 100, 0.95, seed=0)
    assert copies == pytest.approx(single)


# -------------------------------------------------------------------------------------- f1_interval

def test_f1_interval_over_windows():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", NOCALL]
    truth = [{labels[i]} for i in rng.integers(0, 4, 300)]
    predicted = [t if rng.random() < 0.6 else {labels[rng.integers(0, 4)]} for t in truth]
    point = metrics.birdclef_row_f1(truth, predicted)
    low, high = scoring.f1_interval(truth, predicted, 1000, 0.95, seed=0)
    assert low < point < high
    per_row = [2 * len(t & p) / (len(t) + len(p)) for t, p in zip(truth, predicted)]
    normal_width = 2 * 1.96 * np.std(per_row, ddof=1) / np.sqrt(len(per_row))
    assert high - low == pytest.approx(normal_width, rel=0.2)
    assert scoring.f1_interval(truth, truth, 100, 0.95, seed=0) == (1.0, 1.0)

"""stages/scoring/bootstrap.py: percentile intervals by resampling whole units (recordings for mAP,
windows for F1), checked against normal-theory widths, scikit-learn's mAP and hand-computed F1."""

from __future__ import annotations

import numpy as np
import pytest

from stages.birdclef.labels import NOCALL
from stages.scoring import bootstrap, metrics


# ------------------------------------------------------------------------------ bootstrap_interval

def mean_of(data: np.ndarray):
    return lambda units: float(data[units].mean())


def test_bootstrap_interval_contains_the_estimate_and_matches_the_normal_width():
    data = np.random.default_rng(0).normal(3.0, 2.0, 400)
    low, high = bootstrap.bootstrap_interval(mean_of(data), len(data), 2000, 0.95, seed=1)
    assert low < data.mean() < high
    # The 95% interval of a mean is about +-1.96 standard errors wide.
    normal_width = 2 * 1.96 * data.std(ddof=1) / np.sqrt(len(data))
    assert high - low == pytest.approx(normal_width, rel=0.15)
    # A lower level gives a narrower interval inside it.
    low_50, high_50 = bootstrap.bootstrap_interval(mean_of(data), len(data), 2000, 0.5, seed=1)
    assert low < low_50 < data.mean() < high_50 < high


def test_bootstrap_interval_is_reproducible_with_a_seed():
    data = np.random.default_rng(0).normal(size=100)
    first = bootstrap.bootstrap_interval(mean_of(data), len(data), 300, 0.95, seed=7)
    assert bootstrap.bootstrap_interval(mean_of(data), len(data), 300, 0.95, seed=7) == first
    assert bootstrap.bootstrap_interval(mean_of(data), len(data), 300, 0.95, seed=8) != first


def test_bootstrap_interval_narrows_with_more_data():
    rng = np.random.default_rng(0)
    widths = []
    for n in (50, 2000):
        data = rng.normal(size=n)
        low, high = bootstrap.bootstrap_interval(mean_of(data), n, 1000, 0.95, seed=0)
        widths.append(high - low)
    assert widths[1] < widths[0] / 3  # sqrt(2000 / 50) = 6.3


def test_bootstrap_draws_n_units_with_replacement():
    seen = []

    def statistic(units: np.ndarray) -> float:
        seen.append(units.copy())
        return float(len(units))

    bootstrap.bootstrap_interval(statistic, 10, 200, 0.95, seed=0)
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
    real = bootstrap.weighted_map

    def spy(t, s, weights):
        drawn.append(weights)
        return real(t, s, weights)

    monkeypatch.setattr(bootstrap, "weighted_map", spy)
    bootstrap.map_interval(targets, scores, recordings, samples=100, level=0.95, seed=0)
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
        got = bootstrap.weighted_map(targets, scores, weights)
        for draw, value in zip(weights, got):
            rows = np.repeat(np.arange(n), draw)
            if not (targets[rows] > 0).any():
                assert np.isnan(value)
                continue
            assert value == pytest.approx(metrics.mean_average_precision(targets[rows], scores[rows]), abs=1e-12)


def test_map_interval_contains_the_estimate_and_is_reproducible():
    targets, scores, recordings = recordings_case()
    point = metrics.mean_average_precision(targets, scores)
    low, high = bootstrap.map_interval(targets, scores, recordings, 200, 0.95, seed=3)
    assert 0 <= low <= point <= high <= 1
    assert low < high
    assert bootstrap.map_interval(targets, scores, recordings, 200, 0.95, seed=3) == (low, high)


def test_map_interval_of_a_perfect_ranking_is_one():
    targets, _, recordings = recordings_case()
    assert bootstrap.map_interval(targets, targets * 0.9 + 0.05, recordings, 100, 0.95, seed=0) == (1.0, 1.0)


def test_copies_of_chunks_do_not_narrow_the_map_interval():
    """Copies of a recording's chunks carry no new information: drawing recordings sees that, drawing
    chunks would not. 10 copies of every chunk give the interval of the single chunks, not a narrower one."""
    targets, scores, recordings = recordings_case()
    single = bootstrap.map_interval(targets, scores, recordings, 100, 0.95, seed=0)
    copies = bootstrap.map_interval(np.repeat(targets, 10, axis=0), np.repeat(scores, 10, axis=0),
                                    np.repeat(recordings, 10), 100, 0.95, seed=0)
    assert copies == pytest.approx(single)


# -------------------------------------------------------------------------------------- f1_interval

def test_f1_interval_over_windows():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", NOCALL]
    truth = [{labels[i]} for i in rng.integers(0, 4, 300)]
    predicted = [t if rng.random() < 0.6 else {labels[rng.integers(0, 4)]} for t in truth]
    point = metrics.birdclef_row_f1(truth, predicted)
    low, high = bootstrap.f1_interval(truth, predicted, 1000, 0.95, seed=0)
    assert low < point < high
    per_row = [2 * len(t & p) / (len(t) + len(p)) for t, p in zip(truth, predicted)]
    normal_width = 2 * 1.96 * np.std(per_row, ddof=1) / np.sqrt(len(per_row))
    assert high - low == pytest.approx(normal_width, rel=0.2)
    assert bootstrap.f1_interval(truth, truth, 100, 0.95, seed=0) == (1.0, 1.0)

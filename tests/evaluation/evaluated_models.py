"""What the evaluation tests share: the tiny demo in 1 s chunks (128 x 101 log-mels, so a CPU epoch
takes a second or two), and the checks' own computations of scores, label sets and the threshold
rule, made independently of stages/evaluation/. The fixtures are in this folder's conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers import ONE_SECOND_CHUNKS, PLAIN_RECIPE, hand_f1, make_params, prepare_and_featurize
from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import load_split, read_classes
from stages.birdclef.labels import NOCALL
from stages.training.recipe import model_for_recipe, resolve_recipe

SMALL = {
    **ONE_SECOND_CHUNKS,
    **PLAIN_RECIPE,
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

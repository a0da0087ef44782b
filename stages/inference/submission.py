"""The tables stage predict writes, one row per window in file then time order.

- `competition`: BirdCLEF's `row_id,birds` (`<audio_id>_<SITE>_<end second>`, species codes or
  `nocall`), for folders whose every file is named like a soundscape (`<audio_id>_<SITE>_<date>.ogg`);
- `windows`: for any other audio: file (relative to the audio folder), start_s, end_s, birds, and
  the `top_k` best classes with their scores (top1, top1_score, ...); `all_scores` adds one column
  per class with its probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.inference.run import FileScores
from stages.inference.windows import row_id, soundscape_row_prefix
from stages.scoring.metrics import label_sets_to_birds_strings, predictions_to_label_sets

COMPETITION_COLUMNS = ["row_id", "birds"]
WINDOW_COLUMNS = ["file", "start_s", "end_s", "birds"]


def table_format(paths: list[Path]) -> str:
    """`competition` when every file is named like a BirdCLEF soundscape, else `windows`."""
    if paths and all(soundscape_row_prefix(path) is not None for path in paths):
        return "competition"
    return "windows"


def birds_column(scores: np.ndarray, classes: list[str], threshold: float) -> list[str]:
    return label_sets_to_birds_strings(predictions_to_label_sets(scores, classes, threshold))


def competition_table(files: list[FileScores], classes: list[str], threshold: float) -> pd.DataFrame:
    row_ids = [row_id(soundscape_row_prefix(f.path), window) for f in files for window in f.windows]
    birds = birds_column(_all_scores(files, len(classes)), classes, threshold)
    return pd.DataFrame({"row_id": row_ids, "birds": birds}, columns=COMPETITION_COLUMNS)


def windows_table(files: list[FileScores], root: Path, classes: list[str], threshold: float, top_k: int,
                  all_scores: bool) -> pd.DataFrame:
    scores = _all_scores(files, len(classes))
    table = pd.DataFrame({
        "file": [_relative(f.path, root) for f in files for _ in f.windows],
        "start_s": [w.start_s for f in files for w in f.windows],
        "end_s": [w.end_s for f in files for w in f.windows],
        "birds": birds_column(scores, classes, threshold),
    }, columns=WINDOW_COLUMNS)
    names = np.asarray(classes, dtype=object)
    best = np.argsort(-scores, axis=1, kind="stable")[:, :min(top_k, len(classes))]
    for k in range(best.shape[1]):
        table[f"top{k + 1}"] = names[best[:, k]] if len(scores) else []
        table[f"top{k + 1}_score"] = np.round(np.take_along_axis(scores, best[:, k:k + 1], axis=1)[:, 0], 6)
    if all_scores:
        table = pd.concat([table, pd.DataFrame(np.round(scores, 6), columns=classes)], axis=1)
    return table


def _all_scores(files: list[FileScores], n_classes: int) -> np.ndarray:
    if not files:
        return np.zeros((0, n_classes), dtype=np.float32)
    return np.concatenate([f.scores for f in files])


def _relative(path: Path, root: Path) -> str:
    return path.name if root.is_file() else path.relative_to(root).as_posix()

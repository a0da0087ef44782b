"""Reading what prepare and featurize wrote: the chunks of one split (feature rows, weak targets,
labels) and the class names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.problems import DatasetError


@dataclass(frozen=True)
class SplitData:
    """Rows of the feature array that belong to one split, with their targets and labels."""
    feature_rows: np.ndarray   # [n] indices into features.npy
    targets: np.ndarray        # [n, classes] float32, soft weak targets
    labels: pd.DataFrame       # one row per chunk: item_id, primary_label, birds, path, ...


def load_split(prepared_dir: Path, features_dir: Path, split: str) -> SplitData:
    """The decodable chunks of `split` ('train', 'valid' or 'soundscape')."""
    chunks = pd.read_csv(prepared_dir / "chunks.csv", keep_default_na=False)  # an item "NA" stays "NA"
    labels = pd.read_csv(prepared_dir / "labels.csv", keep_default_na=False)
    index = pd.read_csv(features_dir / "index.csv")
    if len(index) != len(chunks) or not (index["chunk_id"].to_numpy() == chunks["chunk_id"].to_numpy()).all():
        raise ValueError(f"{features_dir / 'index.csv'} does not match {prepared_dir / 'chunks.csv'}; "
                         "re-run `dvc repro featurize`")
    keep = (chunks["split"] == split).to_numpy() & (index["valid"].to_numpy() == 1)
    selected = chunks[keep]
    targets = np.load(prepared_dir / "targets.npy")[selected["target_row"].to_numpy()]
    chunk_labels = labels.set_index("target_row").loc[selected["target_row"]].reset_index()
    chunk_labels["path"] = selected["path"].to_numpy()  # the file each chunk was cut from
    return SplitData(selected["chunk_id"].to_numpy(), targets.astype(np.float32), chunk_labels)


def read_classes(prepared_dir: Path) -> list[str]:
    """classes.txt, checked: prepare writes the codes sorted and unique, one per column of targets.npy,
    so lines swapped or lost by hand would put wrong species names on every per-class figure."""
    path = prepared_dir / "classes.txt"
    classes = path.read_text().split()
    columns = np.load(prepared_dir / "targets.npy", mmap_mode="r").shape[1]
    if classes != sorted(set(classes)) or len(classes) != columns:
        raise DatasetError(f"{path}: {len(classes)} codes, not the {columns} sorted unique codes prepare writes for "
                           f"the columns of targets.npy (edited by hand?); re-run `dvc repro prepare`")
    return classes



"""Chunks of one split as (normalised log-mel, weak target) pairs read from the feature memmap."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class SplitData:
    """Rows of the feature array that belong to one split, with their targets and labels."""
    feature_rows: np.ndarray   # [n] indices into features.npy
    targets: np.ndarray        # [n, classes] float32, soft weak targets
    labels: pd.DataFrame       # one row per chunk: item_id, primary_label, birds, ...


def load_split(prepared_dir: Path, features_dir: Path, split: str) -> SplitData:
    """The decodable chunks of `split` ('train', 'valid' or 'soundscape')."""
    chunks = pd.read_csv(prepared_dir / "chunks.csv")
    labels = pd.read_csv(prepared_dir / "labels.csv", keep_default_na=False)
    index = pd.read_csv(features_dir / "index.csv")
    if len(index) != len(chunks) or not (index["chunk_id"].to_numpy() == chunks["chunk_id"].to_numpy()).all():
        raise ValueError(f"{features_dir / 'index.csv'} does not match {prepared_dir / 'chunks.csv'}; "
                         "re-run `dvc repro featurize`")
    keep = (chunks["split"] == split).to_numpy() & (index["valid"].to_numpy() == 1)
    selected = chunks[keep]
    targets = np.load(prepared_dir / "targets.npy")[selected["target_row"].to_numpy()]
    chunk_labels = labels.set_index("target_row").loc[selected["target_row"]].reset_index()
    return SplitData(selected["chunk_id"].to_numpy(), targets.astype(np.float32), chunk_labels)


def read_classes(prepared_dir: Path) -> list[str]:
    return (prepared_dir / "classes.txt").read_text().split()


def read_feature_stats(features_dir: Path) -> dict:
    return json.loads((features_dir / "stats.json").read_text())


class ChunkDataset(torch.utils.data.Dataset):
    """Float32 log-mels normalised like the official AST code: (x - mean) / (2 * std)."""

    def __init__(self, features_path: Path, split: SplitData, mean: float, std: float):
        self.features_path = features_path
        self.split = split
        self.mean = mean
        self.scale = 2 * std
        self._features: np.ndarray | None = None  # opened lazily: each loader worker maps its own

    def __len__(self) -> int:
        return len(self.split.feature_rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._features is None:
            self._features = np.load(self.features_path, mmap_mode="r")
        mel = np.asarray(self._features[self.split.feature_rows[index]], dtype=np.float32)
        x = (torch.from_numpy(mel) - self.mean) / self.scale
        return x, torch.from_numpy(self.split.targets[index])

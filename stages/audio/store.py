"""Writing data/features/: the free-space check before features.npy exists, the memory-mapped
writer, and the train-split normalisation statistics accumulated on the way (stats.json)."""

from __future__ import annotations

import json
import mmap
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.core.atomic import write_json

STATS_FILE = "stats.json"
RELEASE_EVERY_BYTES = 64 * 2**20
# Free space kept on top of features.npy itself: index.csv, stats.json, the report, and some room
# for whatever else writes to the same file system meanwhile.
DISK_MARGIN_BYTES = 64 * 2**20


class DiskSpaceError(OSError):
    """Not enough free space for features.npy; the message gives both sizes and what to do."""


class TrainStats:
    """Sum and sum of squares of the stored float16 values of train rows: what training will see.

    Refuses to give a NaN or infinite mean or std (every later stage would train on NaN losses):
    decode_chunks rejects the audio that could cause one, so this is a second line of defence.
    """

    def __init__(self, is_train: np.ndarray):
        self.is_train = is_train
        self.sums = np.zeros(2, dtype=np.float64)
        self.count = 0
        self.first_non_finite: str | None = None

    def add(self, rows: np.ndarray, values: np.ndarray, source: str = "") -> None:
        train_rows = self.is_train[rows]
        if train_rows.any():
            train = values[train_rows].astype(np.float64).ravel()
            self.sums += [train.sum(), np.square(train, out=train).sum()]
            self.count += train.size
            if self.first_non_finite is None and not np.isfinite(self.sums).all():
                self.first_non_finite = f"{source} (rows {rows[train_rows].tolist()})"

    def mean_std(self) -> tuple[float, float]:
        if self.count == 0:
            raise ValueError("featurize: no train chunk could be decoded; nothing to compute statistics on")
        if self.first_non_finite is not None:
            raise ValueError(f"featurize: the normalisation statistics are not finite: train features "
                             f"hold NaN or Inf, first from {self.first_non_finite}. The stage stops here; "
                             "remove or re-encode that recording.")
        mean = self.sums[0] / self.count
        return float(mean), float(np.sqrt(max(self.sums[1] / self.count - mean**2, 0.0)))


class FeatureWriter:
    """Streams rows into a memory-mapped .npy file without keeping written pages resident."""

    def __init__(self, path: Path, shape: tuple[int, int, int]):
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        self.row_bytes = shape[1] * shape[2] * 2
        self.unreleased_bytes = 0

    def write(self, rows: np.ndarray, values: np.ndarray) -> None:
        self.array[rows] = values
        self.unreleased_bytes += len(rows) * self.row_bytes
        if self.unreleased_bytes >= RELEASE_EVERY_BYTES:
            self.release()

    def release(self) -> None:
        # Written pages of a file mapping count towards RSS until dropped; flush them to the file,
        # then tell the kernel this process no longer needs them (the data stays in the file).
        self.array.flush()
        self.array._mmap.madvise(mmap.MADV_DONTNEED)
        self.unreleased_bytes = 0

    def close(self) -> None:
        self.array.flush()
        del self.array


def check_free_space(target: Path, needed: int) -> None:
    """Fail before writing when `needed` bytes (plus DISK_MARGIN_BYTES) do not fit where `target` goes.

    features.npy is a memory map: a disk filling up half-way would kill the stage with SIGBUS."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed + DISK_MARGIN_BYTES:
        raise DiskSpaceError(
            f"featurize: {target.name} needs {_size(needed)} (chunks x n_mels x frames x 2 bytes), plus "
            f"a {_size(DISK_MARGIN_BYTES)} margin, but the file system holding {existing} has only "
            f"{_size(free)} free. Free space there (or move the DVC workspace to a larger disk), or make "
            "the features smaller: fewer chunks (data.max_chunks_per_recording), features.n_mels, "
            "data.chunk_seconds.")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


@dataclass(frozen=True)
class FeatureStats:
    """data/features/stats.json: the train split's normalisation statistics and the array's shape."""
    mean: float
    std: float
    n_values: int                    # float16 values the statistics were taken over
    shape: tuple[int, int, int]      # features.npy: [chunks, n_mels, n_frames]

    @property
    def n_mels(self) -> int:
        return self.shape[1]

    @property
    def n_frames(self) -> int:
        return self.shape[2]

    def write(self, features_dir: Path) -> None:
        write_json(features_dir / STATS_FILE, {"mean": self.mean, "std": self.std, "n_values": self.n_values,
                                               "shape": list(self.shape)})


def read_feature_stats(features_dir: Path) -> FeatureStats:
    raw = json.loads((features_dir / STATS_FILE).read_text())
    return FeatureStats(raw["mean"], raw["std"], raw["n_values"], tuple(raw["shape"]))

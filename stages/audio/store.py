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
from stages.core.problems import DatasetError

STATS_FILE = "stats.json"
FEATURES_FILE = "features.npy"
RELEASE_EVERY_BYTES = 64 * 2**20
# Free space kept on top of features.npy itself: index.csv, stats.json, the report, and some room
# for whatever else writes to the same file system meanwhile.
DISK_MARGIN_BYTES = 64 * 2**20


class DiskSpaceError(OSError):
    """Not enough free space for features.npy; the message gives both sizes and what to do."""


# Below this spread (log-mel units) the train features are constant up to float rounding: silence.
MIN_FEATURE_STD = 1e-4


class TrainStats:
    """Sum and sum of squares of the stored float16 values of train rows: what training will see.

    Refuses to give a NaN or infinite mean or std (every later stage would train on NaN losses):
    decode_chunks rejects the audio that could cause one, so this is a second line of defence. Refuses
    a zero spread too (silent training audio), which normalisation would divide by.
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
            raise DatasetError("featurize: no train chunk could be decoded; nothing to compute statistics on")
        if self.first_non_finite is not None:
            raise DatasetError(f"featurize: the normalisation statistics are not finite: train features "
                             f"hold NaN or Inf, first from {self.first_non_finite}. The stage stops here; "
                             "remove or re-encode that recording.")
        mean = self.sums[0] / self.count
        std = float(np.sqrt(max(self.sums[1] / self.count - mean**2, 0.0)))
        if not std > MIN_FEATURE_STD:
            raise DatasetError(f"featurize: the train features have no spread (std {std:.3g} over {self.count:,} "
                             f"values, all about {mean:.4g}): the training audio is digital silence or nearly, "
                             "so normalising by it would divide by zero and train on NaN. Check the recordings "
                             "of train_short_audio/ (are they silent, or all the same file?) and re-run.")
        return float(mean), std


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
    """stats.json, checked against the features.npy beside it (one featurize run wrote both)."""
    remedy = "re-run `dvc repro featurize` (or `dvc checkout data/features`)"
    try:
        raw = json.loads((features_dir / STATS_FILE).read_text())
        stats = FeatureStats(raw["mean"], raw["std"], raw["n_values"], tuple(raw["shape"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{features_dir / STATS_FILE}: missing or unreadable ({type(err).__name__}: {err}); "
                           f"{remedy}") from None
    features = features_dir / FEATURES_FILE
    try:
        shape = np.load(features, mmap_mode="r").shape
    except (OSError, ValueError) as err:  # a truncated file: "mmap length is greater than file size"
        raise DatasetError(f"{features}: missing, truncated or damaged ({err}); {remedy}") from None
    if tuple(shape) != stats.shape:
        raise DatasetError(f"{features} holds {list(shape)} but {STATS_FILE} describes {list(stats.shape)}: they "
                           f"come from different featurize runs; {remedy}")
    return stats

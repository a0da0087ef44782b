"""The data path of training and evaluation: whole batches from the float16 feature memmap.

Each batch is one indexed read of sorted rows (sequential pages, no per-item Python), delivered to
the device as float16; on CUDA through two reused pinned buffers and non-blocking copies, so the
read of the next batch overlaps the GPU's work on this one. Normalisation, SpecAugment and mixup
run on the device (stages/training/augment.py), where they cost next to nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.birdclef.prepared import SplitData
from stages.training.distributed import SINGLE, World

PINNED_BUFFERS = 2  # one being copied to the GPU while the next is filled


@dataclass(frozen=True)
class Batch:
    x: torch.Tensor          # [b, n_mels, n_frames] float16 log-mels on the device, not normalised
    y: torch.Tensor          # [b, classes] float32 targets on the device
    positions: np.ndarray    # [b] positions of these chunks within the split
    global_size: int         # chunks in the whole global batch, of which this rank holds `b`


def trained_batches(n_chunks: int, batch_size: int, world: World) -> int:
    """The global batches of `n_chunks`: all of them, less a last one too short to give every rank a
    chunk (every rank drops it alike; otherwise DDP would wait forever for the missing rank)."""
    batches = -(-n_chunks // batch_size)
    last = n_chunks - (batches - 1) * batch_size
    return batches - (1 if batches and last < world.size else 0)


class BatchReader:
    """Batches of one split, in an order the caller chooses (a permutation of the split)."""

    def __init__(self, features_path: Path, split: SplitData, batch_size: int, device: torch.device):
        self.features = np.load(features_path, mmap_mode="r")
        if len(split.feature_rows) and split.feature_rows.max() >= len(self.features):
            raise ValueError(f"{features_path} has {len(self.features)} rows but the split refers to row "
                             f"{split.feature_rows.max()}; re-run `dvc repro featurize`")
        self.split = split
        self.batch_size = batch_size
        self.device = device
        self.targets = torch.from_numpy(split.targets)
        self._pinned: list[torch.Tensor] = []
        self._copied: list[torch.cuda.Event | None] = [None] * PINNED_BUFFERS
        if device.type == "cuda":
            shape = (batch_size, *self.features.shape[1:])
            self._pinned = [torch.empty(shape, dtype=torch.float16).pin_memory() for _ in range(PINNED_BUFFERS)]

    def __len__(self) -> int:
        """The number of batches in one pass."""
        return -(-len(self.split.feature_rows) // self.batch_size)

    def steps(self, world: World = SINGLE, n_chunks: int | None = None) -> int:
        """The optimizer steps of one training pass over `n_chunks` of the split (default: all of it;
        an epoch's draw may take fewer, stages/training/crops.py; see `trained_batches`)."""
        return trained_batches(self.n_chunks if n_chunks is None else n_chunks, self.batch_size, world)

    def trained_chunks(self, world: World = SINGLE, n_chunks: int | None = None) -> int:
        """The chunks of one training pass over `n_chunks`, over all ranks: every one, less a dropped last batch."""
        n_chunks = self.n_chunks if n_chunks is None else n_chunks
        return min(n_chunks, self.steps(world, n_chunks) * self.batch_size)

    @property
    def n_chunks(self) -> int:
        return len(self.split.feature_rows)

    def batches(self, order: np.ndarray | torch.Tensor | None = None, world: World = SINGLE) -> Iterator[Batch]:
        """One pass over the split in `order` (default: split order); the last batch may be short.

        In a world of several ranks every rank walks the same `order` and gets its contiguous share
        of each global batch (`steps` says which batches are trained).
        """
        order = np.arange(self.n_chunks) if order is None else np.asarray(order)
        for number in range(trained_batches(len(order), self.batch_size, world)):
            whole = order[number * self.batch_size:(number + 1) * self.batch_size]
            begin, end = world.slice_bounds(len(whole))[world.rank]
            positions = whole[begin:end]
            # Sorted rows make the read one forward sweep over the file; the batch is a set anyway.
            positions = positions[np.argsort(self.split.feature_rows[positions], kind="stable")]
            yield Batch(self._read(positions, number % PINNED_BUFFERS),
                        self.targets[positions].to(self.device, non_blocking=True), positions, len(whole))

    def _read(self, positions: np.ndarray, slot: int) -> torch.Tensor:
        rows = self.split.feature_rows[positions]
        if self.device.type != "cuda":
            return torch.from_numpy(np.take(self.features, rows, axis=0, mode="clip"))
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # the copy out of this buffer two batches ago is done
        host = self._pinned[slot][:len(rows)]
        np.take(self.features, rows, axis=0, out=host.numpy(), mode="clip")  # clip: no buffered copy
        x = host.to(self.device, non_blocking=True)
        self._copied[slot] = torch.cuda.Event()
        self._copied[slot].record()
        return x

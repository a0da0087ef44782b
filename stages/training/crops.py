"""Which chunks of the train split an epoch trains on: `train.chunks_per_recording` of each recording's.

Stage prepare cuts a recording into chunks `data.hop_seconds` apart (at most
`data.max_chunks_per_recording`, spread over the whole recording). With `all`, an epoch trains every
chunk, so long recordings weigh more and every epoch shows the same pieces. With N, each epoch draws
N of a recording's chunks at random (all of them when it has fewer): an epoch is one pass over the
recordings, and the pieces change from epoch to epoch, as the BirdCLEF solutions' random crops do.
The draw comes from torch's global generator, which the loop seeds per (seed, epoch): a resumed run
draws what an uninterrupted one would, and every data-parallel rank draws the same.
"""

from __future__ import annotations

import numpy as np
import torch

from stages.birdclef.prepared import SplitData


class EpochCrops:
    """The draw of one epoch's chunks (positions within the split) for a split's recordings."""

    def __init__(self, split: SplitData, per_recording: int | str):
        paths = split.labels["path"].to_numpy()
        _, self.recording = np.unique(paths, return_inverse=True)  # [chunks] -> recording number
        self.n_recordings = int(self.recording.max()) + 1 if len(paths) else 0
        self.per_recording = None if per_recording == "all" else int(per_recording)
        chunks_of = np.bincount(self.recording, minlength=self.n_recordings)
        cap = chunks_of if self.per_recording is None else np.minimum(chunks_of, self.per_recording)
        self.size = int(cap.sum())  # chunks per epoch: the same every epoch

    def draw(self) -> torch.Tensor:
        """This epoch's chunks, in a random order: `per_recording` of each recording's, drawn without
        replacement (every chunk with `all`, which keeps the plain permutation of earlier runs)."""
        if self.per_recording is None:
            return torch.randperm(len(self.recording))
        keys = torch.rand(len(self.recording)).numpy()
        by_recording = np.lexsort((keys, self.recording))  # each recording's chunks in random order
        first = np.searchsorted(self.recording[by_recording], np.arange(self.n_recordings))
        rank = np.arange(len(by_recording)) - first[self.recording[by_recording]]
        chosen = torch.from_numpy(by_recording[rank < self.per_recording])
        return chosen[torch.randperm(len(chosen))]

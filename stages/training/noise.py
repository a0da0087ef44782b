"""Background noise in training: bird-free log-mels (stage background) mixed into training chunks.

The features are natural-log mel powers, and powers of independent sounds add: a chunk `a` with
noise `b` at a signal-to-noise ratio of `snr` dB is `log(exp(a) + g * exp(b))`, with `g` making the
chunk's mean mel power `snr` dB above the noise's. (Mixing the logs themselves would multiply the
spectra.) The sum leaves out the cross term of the two waveforms' spectra, which averages to zero
over the frames of a mel band: tests/training/test_noise.py measures how close it comes to the
log-mel of the mixed waveforms. A share `train.nocall_probability` of chunks is replaced by noise
alone with all-zero targets: what a window without a bird looks like, which the weakly labelled
recordings never show (each holds its bird throughout).

All draws come from torch's global CPU generator, which the loop seeds per (seed, epoch), so a
resumed run mixes what an uninterrupted one would. The noise rows are one sorted indexed read of the
memmap per batch, like the training rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages.audio.store import FEATURES_FILE
from stages.core.params import TrainParams
from stages.core.problems import DatasetError


def mix_log_mels(signal: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Log-mel powers [b, mels, frames] of each signal with its noise added at `snr_db` [b]."""
    count = math.log(signal.shape[1] * signal.shape[2])
    log_power_signal = torch.logsumexp(signal.flatten(1), dim=1) - count  # log of the mean mel power
    log_power_noise = torch.logsumexp(noise.flatten(1), dim=1) - count
    log_gain = log_power_signal - log_power_noise - snr_db * (math.log(10) / 10)
    return torch.logaddexp(signal, noise + log_gain[:, None, None])


class Background:
    """Mixes noise into a batch of training chunks (or replaces them by it), as train.* asks."""

    def __init__(self, features_dir: Path, tp: TrainParams, device: torch.device):
        self.features = np.load(features_dir / FEATURES_FILE, mmap_mode="r")
        self.rows = np.flatnonzero(pd.read_csv(features_dir / "index.csv")["valid"].to_numpy() == 1)
        if len(self.rows) == 0:
            raise DatasetError(f"{features_dir}: no background chunk decoded (see reports/background_report.json); "
                               "train.background needs usable bird-free audio, or set train.background_probability "
                               "and train.nocall_probability to 0")
        self.mix_probability = tp.background_probability
        self.nocall_probability = tp.nocall_probability
        self.snr_low, self.snr_high = tp.background_snr_db
        self.device = device

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 log-mels [b, mels, frames] and targets [b, classes] -> the same with noise."""
        n = len(x)
        draw = torch.rand(n)
        nocall = draw < self.nocall_probability
        mixed = ~nocall & (draw < self.nocall_probability + self.mix_probability)
        picks = torch.randint(len(self.rows), (n,))
        snr_db = self.snr_low + (self.snr_high - self.snr_low) * torch.rand(n)
        chosen = torch.nonzero(nocall | mixed).squeeze(1)
        if len(chosen) == 0:
            return x, y
        noise = self._read(self.rows[picks[chosen].numpy()])
        with_noise = torch.where(nocall[chosen, None, None].to(self.device), noise,
                                 mix_log_mels(x[chosen], noise, snr_db[chosen].to(self.device)))
        x = x.index_copy(0, chosen.to(self.device), with_noise)
        y = y.index_copy(0, chosen[nocall[chosen]].to(self.device), y.new_zeros(int(nocall.sum()), y.shape[1]))
        return x, y

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        order = np.argsort(rows, kind="stable")  # one forward sweep over the file
        values = np.take(self.features, rows[order], axis=0)
        unsorted = np.empty_like(values)
        unsorted[order] = values
        return torch.from_numpy(unsorted).to(self.device, torch.float32)

"""Audio decoding and the log-mel front end shared by featurize and the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from stages.params import FeatureParams

LOG_OFFSET = 1e-6  # keeps silence finite: log(0 + 1e-6) = -13.8 instead of -inf


def decode_mono(path: Path, sample_rate: int) -> torch.Tensor:
    """Whole file as a mono float32 tensor at `sample_rate` (channels averaged, then resampled)."""
    audio, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
    if source_rate != sample_rate:
        wave = torchaudio.functional.resample(wave, source_rate, sample_rate)
    return wave


def cut_chunk(wave: torch.Tensor, start_s: float, audio_s: float, sample_rate: int,
              chunk_samples: int) -> torch.Tensor:
    """`chunk_samples` samples from `start_s`, real audio for `audio_s` seconds, zeros after."""
    begin = round(start_s * sample_rate)
    length = min(round(audio_s * sample_rate), chunk_samples, max(0, len(wave) - begin))
    chunk = torch.zeros(chunk_samples, dtype=torch.float32)
    chunk[:length] = wave[begin:begin + length]
    return chunk


class LogMel(torch.nn.Module):
    """Waveforms [batch, samples] -> natural-log mel power [batch, n_mels, frames]."""

    def __init__(self, p: FeatureParams, sample_rate: int):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=p.n_fft, win_length=p.win_length(sample_rate),
            hop_length=p.hop_length(sample_rate), f_min=p.fmin, f_max=p.fmax, n_mels=p.n_mels,
            power=2.0)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(waves) + LOG_OFFSET)


def n_frames(chunk_samples: int, hop_length: int) -> int:
    # MelSpectrogram pads by n_fft // 2 on both sides (center=True): one frame per hop, plus one.
    return chunk_samples // hop_length + 1

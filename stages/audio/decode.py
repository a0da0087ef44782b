"""Audio decoding with torch, what featurize and the tests use: `decode_chunks` (the chunks of one
recording as a tensor, bit-identical to cutting the whole file resampled by torchaudio),
`decode_mono` (a whole file, the tests' reference) and `cut_chunk`. The decoding itself, torch-free,
is stages/audio/stream.py; the log-mel front ends are in stages/audio/logmel.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from stages.audio.stream import ChunkStream, downmix


class TorchaudioFilter:
    """torchaudio's Resample as a ChunkStream filter: numpy in, numpy out, values as the whole-file
    `functional.resample` gives them."""

    def __init__(self, source_rate: int, sample_rate: int):
        # dtype float32: the filter functional.resample builds for float32 audio, value for value.
        self.transform = torchaudio.transforms.Resample(source_rate, sample_rate, dtype=torch.float32)
        self.width = self.transform.width

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        return self.transform(torch.from_numpy(wave)).numpy()


def decode_mono(path: Path, sample_rate: int) -> torch.Tensor:
    """Whole file as a mono float32 tensor at `sample_rate` (channels averaged, then resampled).

    Memory follows the file's length (and what its header claims): for tests and trusted files.
    featurize uses `decode_chunks`, which gives the same samples for its chunks in bounded memory.
    """
    audio, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
    wave = torch.from_numpy(np.ascontiguousarray(downmix(audio)))
    if source_rate != sample_rate:
        wave = torchaudio.functional.resample(wave, source_rate, sample_rate)
    return wave


@dataclass
class DecodedChunks:
    waves: torch.Tensor  # [chunks, chunk_samples] float32, as cut_chunk(decode_mono(...)) would give
    seconds_read: float  # audio decoded: the whole file (its length is checked against its header)
    most_frames_held: int  # largest number of source-rate samples buffered at once (mono)


def decode_chunks(path: Path, starts_s, audio_s, sample_rate: int, chunk_samples: int,
                  min_audio_s: float) -> DecodedChunks:
    """The chunks (`starts_s`, `audio_s` seconds of real audio each) of one recording, identical to
    `cut_chunk(decode_mono(path, sample_rate), ...)`, in memory bounded by the chunks, not the file:
    `ChunkStream`'s chunks gathered into one tensor (its docstring has the bound and the errors)."""
    stream = ChunkStream(path, starts_s, audio_s, sample_rate, chunk_samples, min_audio_s, TorchaudioFilter)
    waves = torch.zeros(len(stream), chunk_samples, dtype=torch.float32)
    for index, wave in stream:
        waves[index] = torch.from_numpy(wave)
    return DecodedChunks(waves, stream.seconds_read, stream.most_frames_held)


def cut_chunk(wave: torch.Tensor, start_s: float, audio_s: float, sample_rate: int,
              chunk_samples: int) -> torch.Tensor:
    """`chunk_samples` samples from `start_s`, real audio for `audio_s` seconds, zeros after."""
    begin = round(start_s * sample_rate)
    length = min(round(audio_s * sample_rate), chunk_samples, max(0, len(wave) - begin))
    chunk = torch.zeros(chunk_samples, dtype=torch.float32)
    chunk[:length] = wave[begin:begin + length]
    return chunk

"""The audio front end in numpy and scipy, for `predict --backend onnx`, which must run where neither
torch nor torchaudio is installed (an offline Kaggle notebook): torchaudio's sinc resampler and the
log-mel of `CpuLogMel` (stages/audio/logmel.py), the same formulas computed with numpy (scipy's FFT,
8x faster than numpy's on float32 frames here, and a sparse filterbank, as CpuLogMel's).

Not bit-identical to the torch versions (another FFT, another summation order): within float32
rounding (tests/audio/test_numpy_dsp.py states the tolerances). Featurize and training keep the torch
versions, so that every feature row stays what it was.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import scipy.sparse
from numpy.lib.stride_tricks import sliding_window_view

LOG_OFFSET = 1e-6  # as stages/audio/logmel.py: log(0 + 1e-6) keeps silence finite
# torchaudio's Resample defaults: 6 zero crossings of a Hann-windowed sinc, cut-off at 0.99 x Nyquist.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


class SincResampler:
    """torchaudio.transforms.Resample(orig, new) (sinc_interp_hann) for 1-D float32 numpy waves."""

    def __init__(self, source_rate: int, sample_rate: int):
        gcd = math.gcd(source_rate, sample_rate)
        self.orig, self.new = source_rate // gcd, sample_rate // gcd
        base = min(self.orig, self.new) * ROLLOFF
        self.width = math.ceil(LOWPASS_FILTER_WIDTH * self.orig / base)
        idx = np.arange(-self.width, self.width + self.orig, dtype=np.float64)[None, :] / self.orig
        t = (np.arange(0, -self.new, -1, dtype=np.float64)[:, None] / self.new + idx) * base
        t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
        window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
        t *= math.pi
        with np.errstate(invalid="ignore", divide="ignore"):
            sinc = np.where(t == 0, 1.0, np.sin(t) / t)
        self.kernel = (sinc * window * base / self.orig).astype(np.float32)  # [new, 2 * width + orig]

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        padded = np.pad(wave.astype(np.float32, copy=False), (self.width, self.width + self.orig))
        frames = sliding_window_view(padded, self.kernel.shape[1])[::self.orig]
        resampled = (frames @ self.kernel.T).reshape(-1)
        return resampled[:math.ceil(np.float32(self.new * len(wave) / self.orig))]


def htk_mel_filterbank(n_freqs: int, fmin: float, fmax: float, n_mels: int, sample_rate: int) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk"): [n_freqs, n_mels]."""
    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    mel_points = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    spacing = np.diff(hz_points)
    slopes = hz_points[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / spacing[:-1]
    up = slopes[:, 2:] / spacing[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


class NumpyLogMel:
    """`CpuLogMel` in numpy: float32 waves [batch, samples] -> natural-log mel power [batch, n_mels,
    frames] (periodic Hann window centred in n_fft, reflect padding, power 2, HTK filterbank)."""

    def __init__(self, mel, sample_rate: int):
        self.n_fft, self.hop = mel.n_fft, mel.hop_length(sample_rate)
        win_length = mel.win_length(sample_rate)
        left = (mel.n_fft - win_length) // 2
        self.window = np.zeros(mel.n_fft, dtype=np.float32)
        n = np.arange(win_length)
        self.window[left:left + win_length] = 0.5 - 0.5 * np.cos(2 * math.pi * n / win_length)
        fbank = htk_mel_filterbank(mel.n_fft // 2 + 1, mel.fmin, mel.fmax, mel.n_mels, sample_rate)
        self.fbank_t = scipy.sparse.csr_matrix(fbank.T)  # each bin feeds at most two filters

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        return np.stack([self._one(np.asarray(wave, dtype=np.float32)) for wave in waves])

    def _one(self, wave: np.ndarray) -> np.ndarray:
        padded = np.pad(wave, self.n_fft // 2, mode="reflect")
        frames = sliding_window_view(padded, self.n_fft)[::self.hop] * self.window
        spectrum = scipy.fft.rfft(frames, axis=1)
        power = (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)
        return np.log(self.fbank_t @ power.T + LOG_OFFSET).astype(np.float32)

"""The log-mel front ends of stages/audio/logmel.py: LogMel (torchaudio) and CpuLogMel.

CpuLogMel is checked twice: against torchaudio's MelSpectrogram (LogMel, what the GPU path uses) and,
independently of both, against the HTK mel formula and the STFT framing worked out by hand.
"""

import math

import numpy as np
import pytest
import torch

from helpers import make_params, tone, write_ogg
from stages.audio.decode import cut_chunk, decode_mono
from stages.audio.logmel import LOG_OFFSET, CpuLogMel, LogMel, n_frames

SR = 32000
FEATURE_VARIANTS = {
    "repo": {},
    "window = n_fft": {"features.win_ms": 32.0},
    "odd window padding": {"features.win_ms": 25.03125},  # 801 samples: (1024 - 801) is odd
    "small fft": {"features.n_fft": 512, "features.win_ms": 15.03125, "features.hop_ms": 5.0,
                  "features.n_mels": 64},
}


def both_frontends(waves: np.ndarray, overrides: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    fp = make_params(overrides).features
    ours = CpuLogMel(fp, SR)(waves)
    with torch.no_grad():
        reference = LogMel(fp, SR)(torch.from_numpy(waves)).numpy()
    return ours, reference


def assert_same_log_mel(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    # 1e-3 in the log is 0.1 % of the power; where the power is tiny, LOG_OFFSET dominates both.
    audible = reference > math.log(1e-4)
    assert audible.mean() > 0.5
    np.testing.assert_allclose(ours[audible], reference[audible], rtol=0, atol=1e-3)
    np.testing.assert_allclose(ours[~audible], reference[~audible], rtol=0, atol=1e-2)


# ------------------------------------------------------------------------- against torchaudio

@pytest.mark.parametrize("overrides", FEATURE_VARIANTS.values(), ids=FEATURE_VARIANTS.keys())
def test_cpu_logmel_matches_torchaudio_on_random_audio(overrides):
    waves = np.random.default_rng(0).normal(0, 0.1, (3, SR)).astype(np.float32)
    waves[1] = 0.0  # an all-zero chunk: every value is log(LOG_OFFSET)
    ours, reference = both_frontends(waves, overrides)
    assert_same_log_mel(ours, reference)
    np.testing.assert_array_equal(ours[1], np.float32(math.log(LOG_OFFSET)))


def test_cpu_logmel_matches_torchaudio_on_decoded_tones(tmp_path):
    audio = np.concatenate([tone(4.0, freq=900, seed=1), tone(4.0, freq=5200, amplitude=0.05, seed=2)])
    wave = decode_mono(write_ogg(tmp_path / "tones.ogg", audio), SR)
    starts_and_lengths = [(0.0, 5.0), (5.0, 3.0)]  # the second chunk is zero-padded after 3 s
    waves = torch.stack([cut_chunk(wave, s, a, SR, 5 * SR) for s, a in starts_and_lengths]).numpy()
    ours, reference = both_frontends(waves)
    assert_same_log_mel(ours, reference)
    # A batch of one gives the same rows as the batch it came from.
    np.testing.assert_array_equal(CpuLogMel(make_params().features, SR)(waves[1:]), ours[1:])


# ------------------------------------------------------------------- independent of torchaudio

def htk_mel_centres(fmin: float, fmax: float, n_mels: int) -> np.ndarray:
    """Centre frequency of each triangular filter: n_mels + 2 points evenly spaced in HTK mels."""
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    points = np.linspace(mel(fmin), mel(fmax), n_mels + 2)
    return 700 * (10 ** (points[1:-1] / 2595) - 1)


@pytest.mark.parametrize("freq", [1010.0, 1900.0, 2500.0, 3333.0, 5000.0, 9000.0, 11000.0, 13000.0])
def test_pure_tone_peaks_in_the_nearest_mel_bin(freq):
    fp = make_params().features
    centres = htk_mel_centres(fp.fmin, fp.fmax, fp.n_mels)
    expected = int(np.argmin(np.abs(centres - freq)))
    spacing = centres[expected + 1] - centres[expected]
    # Keep the test unambiguous: the tone must not sit near the midpoint between two centres.
    assert abs(centres[expected] - freq) < 0.3 * spacing, "pick another test frequency"
    mel = CpuLogMel(fp, SR)(tone(1.0, freq=freq, noise=0.0)[None])[0]
    assert int(mel[:, 5:-5].mean(axis=1).argmax()) == expected


@pytest.mark.parametrize("samples", [SR, SR + 1, SR + 319, 5 * SR, 12345])
def test_one_frame_per_hop_plus_one(samples):
    fp = make_params().features
    mel = CpuLogMel(fp, SR)(np.zeros((2, samples), dtype=np.float32))
    assert mel.shape == (2, fp.n_mels, samples // fp.hop_length(SR) + 1)


@pytest.mark.parametrize("frame", [3, 120, 250, 497])
@pytest.mark.parametrize("offset", [0, 100, -100])
def test_frame_k_is_centred_on_sample_k_times_hop(frame, offset):
    fp = make_params().features
    hop = fp.hop_length(SR)
    wave = np.zeros(5 * SR, dtype=np.float32)
    wave[frame * hop + offset] = 1.0  # a click: flat spectrum, weighted by the window where it falls
    loudness = CpuLogMel(fp, SR)(wave[None])[0].mean(axis=0)
    assert int(loudness.argmax()) == frame
    # Frames whose window does not reach the click (half a window, 400 samples, away) stay silent.
    far = np.abs(np.arange(len(loudness)) * hop - frame * hop - offset) > fp.win_length(SR) // 2
    np.testing.assert_allclose(loudness[far], math.log(LOG_OFFSET), atol=1e-4)


# ------------------------------------------------------------- decode_chunks: what featurize decodes


def test_logmel_shape_and_frames():
    fp = make_params().features
    chunk_samples = make_params().data.chunk_samples
    assert chunk_samples == 5 * SR
    assert fp.hop_length(SR) == 320
    assert n_frames(chunk_samples, fp.hop_length(SR)) == 501
    mel = LogMel(fp, SR)(torch.zeros(3, chunk_samples))
    assert mel.shape == (3, fp.n_mels, 501)

"""The CPU log-mel front end (CpuLogMel) and decoding helpers of stages/audio.py.

CpuLogMel is checked twice: against torchaudio's MelSpectrogram (LogMel, what the GPU path uses) and,
independently of both, against the HTK mel formula and the STFT framing worked out by hand.
"""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import make_params, tone, write_ogg
from stages.audio import AudioError, cut_chunk, decode_chunks, decode_mono, downmix
from stages.logmel import LOG_OFFSET, CpuLogMel, LogMel

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


# -------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("channels", [1, 2, 3])
def test_downmix_is_bit_identical_to_the_channel_mean(tmp_path, channels):
    audio = np.random.default_rng(channels).uniform(-0.5, 0.5, (SR, channels)).astype(np.float32)
    np.testing.assert_array_equal(downmix(audio), audio.mean(axis=1))
    path = tmp_path / "audio.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    wave = decode_mono(path, SR)
    assert wave.dtype == torch.float32
    np.testing.assert_array_equal(wave.numpy(), audio.mean(axis=1))


# ------------------------------------------------------------- decode_chunks: what featurize decodes

CHUNKS = [(0.0, 5.0), (1.2345, 5.0), (3.0, 5.0), (4.99, 5.0), (7.1, 2.9), (8.0, 2.0)]  # 10 s files


def write_audio(path, seconds, rate, channels=1, seed=0):
    """Noise plus a tone, `channels` channels at different levels, as WAV (float) or Ogg Vorbis."""
    audio = tone(seconds, sample_rate=rate, freq=min(3000.0, rate / 5), noise=0.05, seed=seed)
    audio = np.stack([audio * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    if path.suffix == ".ogg":
        write_ogg(path, audio, rate)
    else:
        sf.write(path, audio, rate, subtype="FLOAT")
    return path


def reference_chunks(path, chunks, chunk_samples=5 * SR):
    """The chunks cut from the whole file, decoded at once: what featurize used to do."""
    wave = decode_mono(path, SR)
    return torch.stack([cut_chunk(wave, start, audio_s, SR, chunk_samples) for start, audio_s in chunks])


@pytest.mark.parametrize("rate, channels, suffix", [
    (32000, 1, ".wav"), (32000, 2, ".ogg"), (44100, 2, ".ogg"), (48000, 1, ".ogg"), (44100, 1, ".wav"),
    (22050, 1, ".wav"), (11025, 2, ".wav"), (8000, 1, ".wav"), (16000, 3, ".wav"), (96000, 1, ".wav"),
    (1000, 1, ".wav"),
])
def test_decode_chunks_gives_exactly_the_chunks_of_the_whole_file(tmp_path, rate, channels, suffix):
    """Each chunk's span is decoded and resampled alone, with a margin: the values must be the ones
    resampling the whole file gives, bit for bit, including chunks that reach the end of the file."""
    path = write_audio(tmp_path / f"audio{suffix}", 10.0, rate, channels)
    decoded = decode_chunks(path, *zip(*CHUNKS), SR, 5 * SR, 2.0)
    expected = reference_chunks(path, CHUNKS)
    assert decoded.waves.shape == expected.shape and decoded.waves.dtype == torch.float32
    for k in range(len(CHUNKS)):
        assert torch.equal(decoded.waves[k], expected[k]), CHUNKS[k]
    assert decoded.seconds_read == pytest.approx(10.0, abs=1e-3)


def test_decode_chunks_reads_only_up_to_the_last_chunk(tmp_path):
    path = write_audio(tmp_path / "long.wav", 60.0, 44100)
    decoded = decode_chunks(path, [0.0, 10.0], [5.0, 5.0], SR, 5 * SR, 2.0)
    assert 15.0 <= decoded.seconds_read <= 15.1
    # At most the two chunks' spans (plus a few hundred samples of resampler margin each) were held,
    # never the file or the 5 s between them.
    assert decoded.most_frames_held <= 2 * (5 * 44100 + 2000)
    torch.testing.assert_close(decoded.waves, reference_chunks(path, [(0.0, 5.0), (10.0, 5.0)]), rtol=0, atol=0)


@pytest.mark.parametrize("rate, reason", [
    (999, "sample rate 999 Hz is outside"),
    (500_000, "sample rate 500000 Hz is outside"),
    (44101, "needs a filter of"),  # coprime with 32000 Hz: a 22 GiB resampling filter
])
def test_decode_chunks_refuses_unusable_sample_rates(tmp_path, rate, reason):
    path = tmp_path / "odd.wav"
    sf.write(path, np.zeros(rate // 10, dtype=np.float32), rate)
    with pytest.raises(AudioError, match=reason):
        decode_chunks(path, [0.0], [0.1], SR, 5 * SR, 0.05)

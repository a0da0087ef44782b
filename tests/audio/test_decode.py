"""Decoding (stages/audio/decode.py): resampling and downmixing, cutting chunks, and `decode_chunks`,
which must give exactly the chunks of the whole decoded file while reading only up to the last one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import make_params, tone, write_ogg
from stages.audio.decode import cut_chunk, decode_chunks, decode_mono
from stages.audio.stream import READ_BLOCK_SAMPLES, AudioError, downmix
from stages.audio.logmel import LogMel
from stages.audio.ogg import pages

SR = 32000


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_downmix_is_bit_identical_to_the_channel_mean(tmp_path, channels):
    audio = np.random.default_rng(channels).uniform(-0.5, 0.5, (SR, channels)).astype(np.float32)
    np.testing.assert_array_equal(downmix(audio), audio.mean(axis=1))
    path = tmp_path / "audio.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    wave = decode_mono(path, SR)
    assert wave.dtype == torch.float32
    np.testing.assert_array_equal(wave.numpy(), audio.mean(axis=1))


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


def test_decode_chunks_holds_only_the_chunks_and_checks_the_length_to_the_end(tmp_path):
    path = write_audio(tmp_path / "long.wav", 60.0, 44100)
    decoded = decode_chunks(path, [0.0, 10.0], [5.0, 5.0], SR, 5 * SR, 2.0)
    assert decoded.seconds_read == pytest.approx(60.0)  # on to the end, to compare with the header
    # At most what the two chunks span together (0 to 15 s, plus a few hundred samples of resampler
    # margin), never the file.
    assert decoded.most_frames_held <= 15 * 44100 + 2000
    torch.testing.assert_close(decoded.waves, reference_chunks(path, [(0.0, 5.0), (10.0, 5.0)]), rtol=0, atol=0)


def test_an_ogg_damaged_mid_file_is_refused_even_when_its_chunks_come_before_the_damage(tmp_path):
    """A page lost at about 7 s: the chunk at 0-5 s decodes as before, but everything after the hole
    would be shifted in time; the file decodes shorter than its header claims and is refused."""
    intact = write_audio(tmp_path / "intact.ogg", 10.0, SR)
    data = intact.read_bytes()
    audio_pages = list(pages(data))[3:-1]  # after the three header pages, before the last
    hole = audio_pages[int(0.7 * len(audio_pages))]
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(data[:hole.offset] + data[hole.end:])
    assert sf.info(str(damaged)).frames == sf.info(str(intact)).frames  # the header still claims 10 s
    assert decode_chunks(intact, [0.0], [5.0], SR, 5 * SR, 2.0).seconds_read == pytest.approx(10.0)
    with pytest.raises(AudioError, match=r"decodes to \d+\.\d+ s but its header claims 10.00 s: it is damaged"):
        decode_chunks(damaged, [0.0], [5.0], SR, 5 * SR, 2.0)


@pytest.mark.parametrize("rate, channels", [(44100, 2), (32000, 1)])
def test_many_overlapping_chunks_share_the_samples_they_hold(tmp_path, rate, channels):
    """200 windows, 0.25 s apart, on one 60 s file: each is still bit-identical to cutting the whole
    decoded file, and the decoder holds the samples once (about one read block plus a window), not
    once per window (200 x 5 s, the whole file 17 times over)."""
    path = write_audio(tmp_path / "busy.wav", 60.0, rate, channels)
    chunks = [(0.25 * k, 5.0) for k in range(200)]
    decoded = decode_chunks(path, *zip(*chunks), SR, 5 * SR, 2.0)
    torch.testing.assert_close(decoded.waves, reference_chunks(path, chunks), rtol=0, atol=0)
    assert decoded.most_frames_held <= READ_BLOCK_SAMPLES // channels + 5 * rate + 2000


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


def peak_mel_bin(wave: torch.Tensor) -> int:
    fp = make_params().features
    mel = LogMel(fp, SR)(wave[None, :])[0]
    return int(mel.mean(dim=1).argmax())


def test_cut_chunk_pads_with_zeros():
    wave = torch.arange(1, 11, dtype=torch.float32)  # 10 samples at "10 Hz"
    np.testing.assert_array_equal(cut_chunk(wave, 0.2, 0.5, 10, 8), [3, 4, 5, 6, 7, 0, 0, 0])
    np.testing.assert_array_equal(cut_chunk(wave, 0.7, 0.5, 10, 5), [8, 9, 10, 0, 0])
    np.testing.assert_array_equal(cut_chunk(wave, 2.0, 0.5, 10, 3), [0, 0, 0])
    np.testing.assert_array_equal(cut_chunk(wave, 0.0, 1.0, 10, 4), [1, 2, 3, 4])


def test_decode_resamples_and_downmixes(tmp_path):
    seconds = 3.0
    t48 = np.arange(int(seconds * 48000)) / 48000
    left = 0.5 * np.sin(2 * np.pi * 1000 * t48)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    write_ogg(tmp_path / "stereo48.ogg", stereo, 48000)
    t32 = np.arange(int(seconds * SR)) / SR
    write_ogg(tmp_path / "mono32.ogg", 0.5 * np.sin(2 * np.pi * 1000 * t32), SR)

    wave = decode_mono(tmp_path / "stereo48.ogg", SR)
    reference = decode_mono(tmp_path / "mono32.ogg", SR)
    assert wave.dtype == torch.float32 and wave.ndim == 1
    assert len(wave) == len(reference) == int(seconds * SR)
    assert abs(peak_mel_bin(wave) - peak_mel_bin(reference)) <= 1
    # Channels are averaged: a tone in one channel of two comes out at half its amplitude.
    middle = slice(SR // 2, -SR // 2)
    rms, reference_rms = wave[middle].pow(2).mean().sqrt().item(), reference[middle].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(reference_rms / 2, rel=0.05)
    assert reference_rms == pytest.approx(0.5 / math.sqrt(2), rel=0.05)


def test_decode_resamples_44100(tmp_path):
    write_ogg(tmp_path / "a.ogg", tone(2.0, sample_rate=44100, freq=3000), 44100)
    wave = decode_mono(tmp_path / "a.ogg", SR)
    assert len(wave) == 2 * SR
    reference = decode_mono(write_ogg(tmp_path / "b.ogg", tone(2.0, freq=3000)), SR)
    assert abs(peak_mel_bin(wave) - peak_mel_bin(reference)) <= 1

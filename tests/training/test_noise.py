"""Background noise in training (stages/training/noise.py): mixing in the mel power domain against
the log-mel of the mixed waveforms, the signal-to-noise ratio it sets, and the Background's draws."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import make_params
from stages.audio.logmel import CpuLogMel
from stages.demo.calls import DESIGNS, background_noise, synthesize_phrase
from stages.training.augment import time_shift
from stages.training.noise import Background, mix_log_mels

SAMPLE_RATE = 32000


def log_mel(front: CpuLogMel, wave: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(front(torch.tensor(wave[None], dtype=torch.float32)))).float()


@pytest.fixture(scope="module")
def recording():
    """5 s of a faint field background with two bird phrases, and 5 s of louder wind and hiss."""
    rng = np.random.default_rng(0)
    n = 5 * SAMPLE_RATE
    signal = background_noise(n, SAMPLE_RATE, 0.005, rng)
    for code, begin, gain in (("norcar", 8000, 0.3), ("sonspa", 60000, 0.2)):
        phrase = synthesize_phrase(DESIGNS[code], 1.0, SAMPLE_RATE, rng)
        signal[begin:begin + len(phrase)] += gain * phrase
    noise = background_noise(n, SAMPLE_RATE, 0.02, rng) + 0.01 * rng.normal(size=n)
    return signal, noise


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_mixed_log_mels_match_the_log_mel_of_the_mixed_waveforms(recording, snr_db):
    """Powers of independent sounds add up to a cross term of random sign, which the mel bands
    average over their FFT bins, and the frames of a chunk over time. Measured here: each band's
    mean power over the chunk within 8.2% of the waveform mix's, and the median log-mel value within
    0.25 (natural log, about 1 dB); one log-mel value alone can differ by several units where signal
    and noise are equally strong in a narrow low band. The tolerances are those figures rounded up."""
    signal, noise = recording
    front = CpuLogMel(make_params().features, SAMPLE_RATE)
    a, b = log_mel(front, signal), log_mel(front, noise)
    mixed = mix_log_mels(a, b, torch.tensor([snr_db]))
    # The waveform gain that gives the same SNR: power ratio of the mean mel powers, as an amplitude.
    power_ratio = a.exp().mean() / b.exp().mean() / 10 ** (snr_db / 10)
    reference = log_mel(front, signal + math.sqrt(power_ratio) * noise)
    band_power, reference_band_power = mixed.exp().mean(dim=2), reference.exp().mean(dim=2)
    assert ((band_power - reference_band_power).abs() / reference_band_power).max() < 0.1
    assert (mixed - reference).abs().median() < 0.3
    # Mixing the logs instead of the powers is far off (the rule the docstring warns against).
    wrong = a + b + math.log(power_ratio)
    assert (wrong - reference).abs().median() > 1.0


def test_the_noise_sits_at_the_asked_signal_to_noise_ratio():
    generator = torch.Generator().manual_seed(1)
    signal, noise = torch.randn(3, 16, 40, generator=generator), torch.randn(3, 16, 40, generator=generator) - 2
    snr_db = torch.tensor([-5.0, 3.0, 17.5])
    added_power = (mix_log_mels(signal, noise, snr_db).exp() - signal.exp()).mean(dim=(1, 2))
    measured = 10 * torch.log10(signal.exp().mean(dim=(1, 2)) / added_power)
    torch.testing.assert_close(measured, snr_db, rtol=0, atol=1e-3)


class FakeNoiseFolder:
    """A stage-background output: features.npy of constant rows (row k is all k) and index.csv."""

    def __init__(self, path, rows: int, invalid: tuple[int, ...] = ()):
        path.mkdir()
        np.save(path / "features.npy", np.stack([np.full((4, 6), k, np.float16) for k in range(rows)]))
        valid = [0 if k in invalid else 1 for k in range(rows)]
        (path / "index.csv").write_text("chunk_id,valid\n" + "".join(f"{k},{v}\n" for k, v in enumerate(valid)))


def background(path, **train) -> Background:
    tp = replace(make_params().train, **train)
    return Background(path, tp, torch.device("cpu"))


def test_nocall_chunks_become_noise_alone_with_no_target_and_mixed_ones_keep_theirs(tmp_path):
    FakeNoiseFolder(tmp_path / "bg", rows=5, invalid=(0,))
    x, y = torch.full((64, 4, 6), -20.0), torch.ones(64, 3)
    torch.manual_seed(0)
    out_x, out_y = background(tmp_path / "bg", background_probability=0.4, nocall_probability=0.3,
                              background_snr_db=[5.0, 5.0])(x, y)
    nocall = (out_y == 0).all(dim=1)
    changed = (out_x != x).flatten(1).any(dim=1)
    assert 8 < nocall.sum() < 32 and 10 < (changed & ~nocall).sum() < 40
    noise_values = out_x[nocall].flatten(1)
    assert (noise_values == noise_values[:, :1]).all() and set(noise_values[:, 0].tolist()) <= {1.0, 2.0, 3.0, 4.0}
    assert (out_y[~nocall] == 1).all()  # mixed and untouched chunks keep their birds
    assert torch.equal(out_x[~changed], x[~changed]) and torch.equal(x, torch.full((64, 4, 6), -20.0))
    torch.manual_seed(0)
    again = background(tmp_path / "bg", background_probability=0.4, nocall_probability=0.3,
                       background_snr_db=[5.0, 5.0])(x, y)
    assert torch.equal(again[0], out_x) and torch.equal(again[1], out_y)


def test_a_noise_folder_with_no_decoded_chunk_is_refused(tmp_path):
    FakeNoiseFolder(tmp_path / "bg", rows=2, invalid=(0, 1))
    with pytest.raises(ValueError, match="no background chunk decoded"):
        background(tmp_path / "bg", background_probability=0.5)


def test_time_shift_rolls_each_chunk_by_its_own_draw():
    x = torch.arange(5 * 2 * 30, dtype=torch.float32).reshape(5, 2, 30)
    torch.manual_seed(4)
    shifted = time_shift(x, 7)
    torch.manual_seed(4)
    shifts = torch.randint(-7, 8, (5, 1))
    for example, shift in zip(range(5), shifts[:, 0].tolist()):
        assert torch.equal(shifted[example], torch.roll(x[example], shift, dims=1))
    assert len(set(shifts[:, 0].tolist())) > 1
    assert time_shift(x, 0) is x

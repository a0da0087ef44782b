"""The numpy front end of predict's ONNX path (stages/audio/numpy_dsp.py) against the torch one
featurize uses: the same formulas, so the same values to float32 rounding (the tolerances below)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from helpers import make_params
from stages.audio.decode import TorchaudioFilter
from stages.audio.logmel import CpuLogMel
from stages.audio.numpy_dsp import NumpyLogMel, SincResampler, htk_mel_filterbank
from stages.audio.stream import ChunkStream

SR = 32000


@pytest.mark.parametrize("source_rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_the_resampler_is_torchaudios(source_rate):
    wave = np.random.default_rng(source_rate).normal(0, 0.3, 2 * source_rate + 17).astype(np.float32)
    expected = torchaudio.transforms.Resample(source_rate, SR, dtype=torch.float32)(torch.from_numpy(wave)).numpy()
    ours = SincResampler(source_rate, SR)
    assert ours.width == TorchaudioFilter(source_rate, SR).width
    resampled = ours(wave)
    assert resampled.dtype == np.float32 and resampled.shape == expected.shape
    # torchaudio builds its float32 kernel in float32, ours in float64, then rounds it.
    assert np.abs(resampled - expected).max() < 1e-4


def test_the_filterbank_is_torchaudios():
    expected = torchaudio.functional.melscale_fbanks(513, 50.0, 14000.0, 128, SR, norm=None, mel_scale="htk")
    np.testing.assert_allclose(htk_mel_filterbank(513, 50.0, 14000.0, 128, SR), expected.numpy(), atol=2e-5)


def test_the_log_mel_is_featurizes_to_float_rounding():
    params = make_params()
    waves = np.random.default_rng(0).normal(0, 0.1, (3, 5 * SR)).astype(np.float32)
    waves[1] *= 0  # silence: log(0 + 1e-6) on both sides
    expected = CpuLogMel(params.features, SR)(waves)
    ours = NumpyLogMel(params.features, SR)(waves)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 5e-4
    # What the networks see are float16 values: a step in under 1% of them.
    assert np.mean(ours.astype(np.float16) != expected.astype(np.float16)) < 0.01


def test_a_stream_with_the_numpy_filter_gives_the_torch_streams_chunks(tmp_path):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "a.wav", rng.normal(0, 0.2, (12 * 44100, 2)).astype(np.float32), 44100, subtype="FLOAT")
    chunks = ([0.0, 3.3, 7.0], [5.0, 5.0, 5.0], SR, 5 * SR, 2.0)
    numpy_chunks = dict(ChunkStream(tmp_path / "a.wav", *chunks, SincResampler))
    torch_chunks = dict(ChunkStream(tmp_path / "a.wav", *chunks, TorchaudioFilter))
    assert sorted(numpy_chunks) == [0, 1, 2]
    for index, wave in torch_chunks.items():
        assert np.abs(numpy_chunks[index] - wave).max() < 1e-4

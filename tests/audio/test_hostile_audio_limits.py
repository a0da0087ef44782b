"""What featurize refuses or bounds (stages/audio/decode.py through features.py), each beside a good
recording: NaN and Inf samples, a header claiming a huge length, a sample rate too low, and a
10-minute file decoded in bounded memory. The bulk table of hostile files: test_hostile_audio.py."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers import chunk_table, make_params, ogg_claiming, run_featurize, tone, write_ogg
from stages.audio.stream import MIN_SOURCE_SAMPLE_RATE, READ_BLOCK_SAMPLES
from stages.audio.features import RecordingChunks
from stages.birdclef.chunks import chunk_windows
from stages.core.problems import DatasetError


SR = 32000


def good_and_bad(tmp_path, write_bad, bad_rows):
    """A good 6 s train recording plus `bad.*` written by write_bad(path): (chunk table, root)."""
    root = tmp_path / "data"
    write_ogg(root / "train_short_audio" / "a" / "good.ogg", tone(6.0))
    bad = write_bad(root / "train_short_audio" / "a")
    rows = [("train", "train_short_audio/a/good.ogg", 0.0, 5.0)]
    rows += [("train", f"train_short_audio/a/{bad.name}", start, audio_s) for start, audio_s in bad_rows]
    return chunk_table(rows), root


def float_wav_with(value):
    def write(folder):
        audio = tone(6.0)
        audio[SR + 123] = value
        sf.write(folder / "bad.wav", audio, SR, subtype="FLOAT")  # FLOAT WAV keeps NaN and Inf
        return folder / "bad.wav"
    return write


def assert_skipped(report, out, chunks, reason):
    """The bad rows are left out exactly like an undecodable file's: listed, zero, marked invalid."""
    assert len(report["skipped"]) == 1, report["skipped"]
    assert report["skipped"][0]["file"].endswith("train_short_audio/a/" + chunks["path"].iloc[-1].split("/")[-1])
    assert reason in report["skipped"][0]["reason"]
    bad_rows = (chunks["path"] != chunks["path"].iloc[0]).to_numpy()
    features = np.load(out / "features.npy")
    assert np.isfinite(features).all() and (features[bad_rows] == 0).all() and (features[~bad_rows] != 0).any()
    assert (pd.read_csv(out / "index.csv")["valid"].to_numpy() == ~bad_rows).all()
    stats = json.loads((out / "stats.json").read_text())
    assert math.isfinite(stats["mean"]) and math.isfinite(stats["std"]) and stats["std"] > 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_a_recording_with_nan_or_inf_samples_is_skipped(tmp_path, value):
    chunks, root = good_and_bad(tmp_path, float_wav_with(value), [(0.0, 5.0)])
    report, _ = run_featurize(chunks, root, tmp_path / "features", strict=False)
    assert_skipped(report, tmp_path / "features", chunks, "decoded audio is not finite")


def test_a_recording_with_nan_samples_stops_a_strict_run(tmp_path):
    chunks, root = good_and_bad(tmp_path, float_wav_with(np.nan), [(0.0, 5.0)])
    with pytest.raises(DatasetError, match=r"a/bad\.wav: decoded audio is not finite: sample 32123 "):
        run_featurize(chunks, root, tmp_path / "features", strict=True)


def ogg_claiming_file(frames):
    """3 s of real Ogg Vorbis whose last page claims `frames` samples (granule position patched)."""
    def write(folder):
        (folder / "bad.ogg").write_bytes(ogg_claiming(frames, SR, serial=7))
        return folder / "bad.ogg"
    return write


def test_a_header_claiming_a_huge_length_costs_nothing(tmp_path):
    """sf.info believes the last granule: 2^50 samples, 1115 years, 4 PiB of float32."""
    chunks, root = good_and_bad(tmp_path, ogg_claiming_file(2**50), [])
    claimed = sf.info(root / "train_short_audio/a/bad.ogg").duration
    assert claimed > 3e10
    # What prepare makes of such a header: max_chunks_per_recording chunks spread over it.
    chunks, root = good_and_bad(tmp_path / "spread", ogg_claiming_file(2**50),
                                [(0.0, 5.0), (round(claimed / 2), 5.0), (round(claimed) - 5, 5.0)])
    tracemalloc.start()
    try:
        report, _ = run_featurize(chunks, root, tmp_path / "features", strict=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_skipped(report, tmp_path / "features", chunks, "the file holds less than its header says")
    assert "the audio ends at 3.00 s" in report["skipped"][0]["reason"]
    assert peak < 64 * 2**20


def test_a_very_low_sample_rate_is_refused(tmp_path):
    """100 samples at 10 Hz claim 10 s; resampled to 32 kHz, a 1 Hz day-long file would be 11 GiB."""
    def write(folder):
        sf.write(folder / "bad.wav", tone(10.0, sample_rate=10, freq=2.0), 10)
        return folder / "bad.wav"
    chunks, root = good_and_bad(tmp_path, write, [(0.0, 5.0), (5.0, 5.0)])
    report, _ = run_featurize(chunks, root, tmp_path / "features", strict=False)
    assert_skipped(report, tmp_path / "features", chunks,
                   f"sample rate 10 Hz is outside the {MIN_SOURCE_SAMPLE_RATE}-")


def test_a_ten_minute_recording_is_decoded_in_bounded_memory(tmp_path):
    """decode_chunks' bound: 4 B x (read block + its downmix + the chunks' spans + waves + resampling
    temporaries); for 3 chunks of 5 s at 32 kHz about 14 MB, where decoding the whole file took 77 MB
    (and a 10-hour file would take 4.6 GB). tracemalloc sees every numpy buffer (reading, downmix,
    spans), which is where the whole file used to go; torch's (waves) it does not see."""
    root = tmp_path / "data"
    path = root / "train_short_audio" / "a" / "long.wav"
    path.parent.mkdir(parents=True)
    sf.write(path, tone(600.0, amplitude=0.1, noise=0.01), SR, subtype="PCM_16")
    params = make_params({"data.root": str(root), "data.max_chunks_per_recording": 3})
    windows = chunk_windows(600.0, 5.0, 5.0, 2.0, params.data.max_chunks_per_recording)
    assert len(windows) == 3 and windows[-1][0] == 595.0  # spread over the whole file
    chunks = chunk_table([("train", "train_short_audio/a/long.wav", start, a) for start, a in windows])
    dataset = RecordingChunks(chunks, root, params.data)
    tracemalloc.start()
    try:
        item = dataset[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert item["error"] is None and item["waves"].shape == (3, 5 * SR)
    # decode_chunks' docstring bound; at the source rate no resampling margin (0) and period (1).
    n_chunks, channels, chunk_seconds, margin, period = len(windows), 1, 5, 0, 1
    bound = 4 * (READ_BLOCK_SAMPLES * (1 + 1 / channels) + n_chunks * (chunk_seconds * SR + 2 * margin + period)
                 + (n_chunks + 3) * chunk_seconds * SR)
    assert peak <= bound < 16 * 2**20
    assert item["audio_seconds"] == pytest.approx(600.0)  # read to its end: the last chunk is there
    np.testing.assert_array_equal(item["waves"][2].numpy(), sf.read(path, start=595 * SR, dtype="float32")[0])

"""Hostile audio files fed through stage featurize, each a real file on disk next to a good recording.

Every case must end in finite features for its chunks or in a skip naming the file with a specific
reason (with data.strict, a DatasetError saying the same): never a traceback, never NaN or Inf in the
features or the normalisation statistics, never memory or time that follows a lying header.
"""

import json
import math
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from helpers import make_params, ogg_claiming, tone, write_ogg
from stages.audio.features import featurize
from stages.audio.ogg import encode_ogg_vorbis
from stages.birdclef.chunks import chunk_windows
from stages.core.problems import DatasetError, Problems

SR = 32000
# Chunks 5 s apart, three at most: the geometry the cases' expected reasons name.
PARAMS = make_params({"features.workers": 0, "features.device": "cpu", "data.hop_seconds": 5.0,
                      "data.max_chunks_per_recording": 3})


def header_chunks(path: Path) -> list[tuple[float, float]]:
    """The chunks prepare would cut from what the file's header says."""
    info = sf.info(str(path))
    p = PARAMS.data
    return chunk_windows(info.frames / info.samplerate, p.chunk_seconds, p.hop_seconds,
                         p.min_remainder_seconds, p.max_chunks_per_recording)


def wav(path, audio, rate=SR, subtype="FLOAT"):
    sf.write(path, audio, rate, subtype=subtype)
    return path


def float_wav_with(value):
    audio = tone(6.0)
    audio[40000] = value
    return lambda d: (wav(d / "bad.wav", audio), [(0.0, 5.0)])


def truncated_ogg(d):
    """An interrupted download: the second half of the stream is gone, prepare ran on the whole."""
    path = write_ogg(d / "bad.ogg", tone(8.0))
    chunks = header_chunks(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path, chunks


def wav_named_ogg(d):
    path = d / "bad.ogg"
    sf.write(path, tone(6.0), SR, format="WAV", subtype="PCM_16")
    return path, header_chunks(path)


def ogg_named_wav(d):
    path = d / "bad.wav"
    path.write_bytes(encode_ogg_vorbis(tone(6.0), SR, serial=3))
    return path, header_chunks(path)


def empty(d):
    (d / "bad.ogg").write_bytes(b"")
    return d / "bad.ogg", [(0.0, 5.0)]


def random_bytes(d):
    (d / "bad.ogg").write_bytes(np.random.default_rng(0).bytes(50_000))
    return d / "bad.ogg", [(0.0, 5.0)]


def channels_8(d):
    audio = np.stack([tone(6.0, freq=500 + 700 * c, seed=c) for c in range(8)], axis=1)
    path = write_ogg(d / "bad.ogg", audio)
    return path, header_chunks(path)


def rate(hz, suffix=".wav", seconds=6.0):
    def write(d):
        audio = tone(seconds, sample_rate=hz, freq=min(2000.0, hz / 4))
        path = write_ogg(d / f"bad{suffix}", audio, hz) if suffix == ".ogg" else wav(d / f"bad{suffix}", audio, hz)
        return path, header_chunks(path)
    return write


def ogg_claiming_2_to_50_samples(d):
    """3 s of real audio whose last page's granule position claims 2^50 samples (1115 years)."""
    (d / "bad.ogg").write_bytes(ogg_claiming(2**50, SR, serial=5))
    claimed = sf.info(str(d / "bad.ogg")).duration
    assert claimed > 3e10
    # What prepare keeps of such a header: max_chunks_per_recording chunks spread over all of it.
    return d / "bad.ogg", [(0.0, 5.0), (round(claimed / 2), 5.0), (round(claimed) - 5, 5.0)]


def wav_claiming_4_gib(d):
    """The data chunk's size field says 4 GiB; libsndfile trusts the file's real size instead."""
    path = wav(d / "bad.wav", tone(6.0), subtype="PCM_16")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.find(b"data") + 4, 0xFFFFFFF0)
    path.write_bytes(bytes(data))
    return path, header_chunks(path)


def ten_minutes(d):
    path = wav(d / "bad.wav", tone(600.0, noise=0.05), subtype="PCM_16")
    return path, header_chunks(path)


VALID = None
CASES = {  # name: (writes the file into a folder -> (path, chunks), None or the skip reason)
    "truncated_ogg": (truncated_ogg, "too soon for the chunk at 5 s"),
    "wav_named_ogg": (wav_named_ogg, VALID),
    "ogg_named_wav": (ogg_named_wav, VALID),
    "zero_bytes": (empty, "cannot decode audio"),
    "random_bytes": (random_bytes, "cannot decode audio"),
    "8_channels": (channels_8, VALID),
    "8_khz": (rate(8000, ".ogg"), VALID),
    "96_khz": (rate(96000, ".ogg"), VALID),
    "22050_hz_wav": (rate(22050), VALID),
    "1_hz_wav": (rate(1, seconds=3600.0), "sample rate 1 Hz is outside"),
    "10_hz_wav": (rate(10, seconds=600.0), "sample rate 10 Hz is outside"),
    "44101_hz_wav": (rate(44101), "needs a filter of"),  # coprime with 32 kHz: a 22 GiB filter
    "nan_sample": (float_wav_with(np.nan), "decoded audio is not finite"),
    "inf_sample": (float_wav_with(np.inf), "decoded audio is not finite"),
    "1e30_sample": (float_wav_with(1e30), "a sample reaches 1e+30"),
    "ogg_claims_2^50_samples": (ogg_claiming_2_to_50_samples, "the file holds less than its header says"),
    "wav_claims_4_gib": (wav_claiming_4_gib, VALID),
    "10_minutes": (ten_minutes, VALID),
}


def run(root: Path, chunks: pd.DataFrame, out: Path, strict: bool) -> dict:
    out.mkdir()
    return featurize(chunks, root, PARAMS.data, PARAMS.features, out, Problems(strict=strict))


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_file_gives_finite_features_or_a_named_skip(tmp_path, case):
    write, reason = case
    root = tmp_path / "data"
    folder = root / "train_short_audio" / "a"
    write_ogg(folder / "good.ogg", tone(6.0, freq=1500))
    path, windows = write(folder)
    rows = [("train", "train_short_audio/a/good.ogg", 0.0, 5.0)]
    rows += [("train", f"train_short_audio/a/{path.name}", start, audio_s) for start, audio_s in windows]
    chunks = pd.DataFrame(rows, columns=["split", "path", "start_s", "audio_s"])
    chunks.insert(0, "chunk_id", np.arange(len(chunks)))
    chunks["target_row"] = 0
    chunks["item_id"] = chunks["path"]
    hostile = (chunks["path"] != "train_short_audio/a/good.ogg").to_numpy()
    assert hostile.any()

    tracemalloc.start()
    try:
        report = run(root, chunks, tmp_path / "features", strict=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # numpy buffers: bounded by the chunks, whatever the file or header says

    features = np.load(tmp_path / "features" / "features.npy")
    valid = pd.read_csv(tmp_path / "features" / "index.csv")["valid"].to_numpy().astype(bool)
    stats = json.loads((tmp_path / "features" / "stats.json").read_text())
    assert np.isfinite(features).all()
    assert math.isfinite(stats["mean"]) and math.isfinite(stats["std"]) and stats["std"] > 0
    assert valid[~hostile].all() and (features[~hostile] != 0).any()
    if reason is VALID:
        assert report["skipped"] == []
        assert valid[hostile].all() and report["chunks_valid"] == len(chunks)
        # Audio, not only the silence floor.
        assert all(features[k].astype(np.float32).std() > 0.1 for k in np.flatnonzero(hostile))
    else:
        assert len(report["skipped"]) == 1, report["skipped"]
        skip = report["skipped"][0]
        assert skip["file"] == str(path) and reason in skip["reason"], skip
        assert not valid[hostile].any() and (features[hostile] == 0).all()
        with pytest.raises(DatasetError) as error:
            run(root, chunks, tmp_path / "strict", strict=True)
        assert f"{path}: " in str(error.value) and reason in str(error.value)

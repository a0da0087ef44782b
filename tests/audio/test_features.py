"""Stage featurize's work (stages/audio/features.py and store.py): the feature array, its index and
statistics, CPU workers against the in-process path, unusable audio, memory and disk space, and the
stored features against an independent librosa computation."""

import json
import math
import shutil
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from helpers import make_params, ogg_claiming, tone, write_ogg
from stages.audio.decode import MIN_SOURCE_SAMPLE_RATE, READ_BLOCK_SAMPLES, cut_chunk, decode_mono
from stages.audio.logmel import LOG_OFFSET, CpuLogMel, LogMel
from stages.audio.features import RecordingChunks, _feature_rows, featurize
from stages.audio.store import DISK_MARGIN_BYTES, DiskSpaceError, TrainStats, check_free_space
from stages.birdclef.chunks import chunk_windows
from stages.birdclef.tables import build_tables
from stages.core.problems import DatasetError, Problems

SR = 32000


def run_featurize(chunks, root, out, overrides=None, strict=True):
    params = make_params({"data.root": str(root), "features.workers": 0, **(overrides or {})})
    out.mkdir()
    problems = Problems(strict=strict)
    report = featurize(chunks, root, params.data, params.features, out, problems)
    return report, params


def chunk_table(rows):
    """rows: (split, path, start_s, audio_s) -> a chunk table like prepare's."""
    table = pd.DataFrame(rows, columns=["split", "path", "start_s", "audio_s"])
    table.insert(0, "chunk_id", np.arange(len(table)))
    table["target_row"] = np.arange(len(table))
    table["item_id"] = table["path"]
    return table


# --------------------------------------------------------------------------------- the stage

@pytest.fixture(scope="module")
def demo_features(demo_root, tmp_path_factory):
    params = make_params({"data.root": str(demo_root)})
    chunks = build_tables(demo_root, params.data, params.seed, Problems(strict=True)).chunks
    out = tmp_path_factory.mktemp("features") / "features"
    # The repo's worker count: decoding runs in DataLoader worker processes, as in the pipeline.
    report, params = run_featurize(chunks, demo_root, out, {"features.workers": 2})
    return chunks, out, report, params


def test_features_shape_dtype_and_index(demo_features):
    chunks, out, report, params = demo_features
    features = np.load(out / "features.npy", mmap_mode="r")
    assert features.shape == (len(chunks), params.features.n_mels, 501)
    assert features.dtype == np.float16
    assert np.isfinite(features).all()
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["chunk_id", "valid"]
    assert (index["chunk_id"].to_numpy() == chunks["chunk_id"].to_numpy()).all()
    assert (index["valid"] == 1).all()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["shape"] == list(features.shape)
    assert report["chunks"] == report["chunks_valid"] == len(chunks)
    assert report["files"] == chunks["path"].nunique()
    assert report["skipped"] == []


def test_feature_rows_match_their_chunks(demo_features, demo_root):
    chunks, out, _, params = demo_features
    features = np.load(out / "features.npy", mmap_mode="r")
    frontend = LogMel(params.features, SR)
    padded = chunks[chunks["audio_s"] < 5.0]
    picks = pd.concat([chunks.iloc[[0, len(chunks) // 2, len(chunks) - 1]], padded.iloc[:1]])
    assert len(padded) > 0, "the tiny demo should have a zero-padded tail chunk"
    for chunk in picks.itertuples():
        wave = decode_mono(demo_root / chunk.path, SR)
        expected = frontend(cut_chunk(wave, chunk.start_s, chunk.audio_s, SR, 5 * SR)[None])[0]
        got = torch.from_numpy(features[chunk.chunk_id].astype(np.float32))
        torch.testing.assert_close(got, expected, atol=0.02, rtol=0.01)
    # Padding is silence: frames after the real audio sit at the log floor.
    chunk = padded.iloc[0]
    first_silent_frame = math.ceil(chunk.audio_s * 100) + 2  # 10 ms hop, plus the window's reach
    tail = features[chunk.chunk_id][:, first_silent_frame:].astype(np.float32)
    np.testing.assert_allclose(tail, math.log(LOG_OFFSET), atol=0.02)


def test_cpu_workers_give_the_same_output_as_in_process(demo_features, demo_root, tmp_path):
    chunks = demo_features[0]
    reports = {}
    for workers in (0, 2):  # 0: decode and log-mels in this process; 2: both in worker processes
        reports[workers], _ = run_featurize(chunks, demo_root, tmp_path / f"w{workers}",
                                            {"features.device": "cpu", "features.workers": workers})
    in_process, workers = tmp_path / "w0", tmp_path / "w2"
    for name in ("features.npy", "stats.json", "index.csv"):
        assert (in_process / name).read_bytes() == (workers / name).read_bytes(), name
    timings = {"wall_seconds", "audio_seconds_per_second", "peak_rss_mib_main", "peak_rss_mib_largest_worker"}
    assert set(reports[0]) == set(reports[2])
    assert {k: v for k, v in reports[0].items() if k not in timings} == \
           {k: v for k, v in reports[2].items() if k not in timings}
    assert reports[2]["device"] == "cpu" and reports[2]["chunks_valid"] == len(chunks)


def test_main_process_batches_match_the_worker_log_mels(demo_features, demo_root):
    """The CUDA path (LogMel on waves, in batch_size batches in the main process), run on the CPU
    here, stores what the CPU path (CpuLogMel in the workers) stores, up to float16 rounding."""
    chunks, _, _, params = demo_features
    counts = chunks.groupby("path", sort=False).size().to_numpy()
    index = int(np.argmax(counts))
    assert counts[index] >= 3, "need a file with more chunks than one batch"
    with_waves = RecordingChunks(chunks, demo_root, params.data)[index]
    with_mels = RecordingChunks(chunks, demo_root, params.data, CpuLogMel(params.features, SR))[index]
    batched = list(_feature_rows(with_waves, LogMel(params.features, SR), 2, torch.device("cpu")))
    whole = list(_feature_rows(with_mels, None, 2, torch.device("cpu")))
    assert len(batched) == math.ceil(counts[index] / 2) and len(whole) == 1
    np.testing.assert_array_equal(np.concatenate([rows for rows, _ in batched]), whole[0][0])
    gpu_values = np.concatenate([values for _, values in batched])
    assert gpu_values.dtype == whole[0][1].dtype == np.float16
    np.testing.assert_allclose(gpu_values.astype(np.float32), whole[0][1].astype(np.float32), atol=0.02)


def test_silent_audio_gives_finite_features(tmp_path):
    root = tmp_path / "data"
    write_ogg(root / "train_short_audio" / "a" / "silent.ogg", np.zeros(6 * SR, dtype=np.float32))
    chunks = chunk_table([("train", "train_short_audio/a/silent.ogg", 0.0, 5.0)])
    run_featurize(chunks, root, tmp_path / "features")
    features = np.load(tmp_path / "features" / "features.npy").astype(np.float32)
    assert np.isfinite(features).all()
    assert features.max() <= math.log(LOG_OFFSET) + 1.0
    stats = json.loads((tmp_path / "features" / "stats.json").read_text())
    assert math.isfinite(stats["mean"]) and math.isfinite(stats["std"])


def test_statistics_come_from_the_train_split_only(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        write_ogg(root / "train_short_audio" / "a" / f"quiet{k}.ogg",
                  tone(8.0, freq=1000 + 500 * k, amplitude=0.01, noise=0.001, seed=k))
        rows += [("train", f"train_short_audio/a/quiet{k}.ogg", 0.0, 5.0),
                 ("train", f"train_short_audio/a/quiet{k}.ogg", 5.0, 3.0)]
    for name, split in (("loud_valid", "valid"), ("loud_scape", "soundscape")):
        write_ogg(root / "train_short_audio" / "a" / f"{name}.ogg", 0.9 * rng.uniform(-1, 1, 6 * SR))
        rows.append((split, f"train_short_audio/a/{name}.ogg", 0.0, 5.0))
    chunks = chunk_table(rows)
    # batch_size 4 puts train and loud rows in the same batch: the split mask must hold within a batch.
    run_featurize(chunks, root, tmp_path / "features", {"features.batch_size": 4})

    features = np.load(tmp_path / "features" / "features.npy").astype(np.float64)
    stats = json.loads((tmp_path / "features" / "stats.json").read_text())
    train = features[(chunks["split"] == "train").to_numpy()]
    assert stats["n_values"] == train.size
    assert stats["mean"] == pytest.approx(train.mean(), rel=1e-6)
    assert stats["std"] == pytest.approx(train.std(), rel=1e-4)
    # The loud rows would move the statistics a lot had they been counted.
    assert abs(features.mean() - train.mean()) > 1.0


# ------------------------------------------------------------ unusable audio, memory, disk space

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


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_train_stats_refuse_non_finite_values(value):
    stats = TrainStats(np.array([True, True, False]))
    stats.add(np.array([0]), np.ones((1, 2, 3), dtype=np.float16))
    stats.add(np.array([2]), np.full((1, 2, 3), value, dtype=np.float16))  # a valid row: not counted
    assert stats.mean_std() == (1.0, 0.0)
    values = np.ones((1, 2, 3), dtype=np.float16)
    values[0, 1, 2] = value
    stats.add(np.array([1]), values)
    with pytest.raises(ValueError, match="statistics are not finite"):
        stats.mean_std()


def test_train_stats_name_the_first_recording_with_non_finite_values():
    stats = TrainStats(np.array([True, True, True]))
    stats.add(np.array([0]), np.ones((1, 2, 3), dtype=np.float16), "a.ogg")
    stats.add(np.array([1, 2]), np.full((2, 2, 3), np.nan, dtype=np.float16), "b.ogg")
    stats.add(np.array([0]), np.full((1, 2, 3), np.inf, dtype=np.float16), "c.ogg")
    with pytest.raises(ValueError, match=r"first from b\.ogg \(rows \[1, 2\]\)"):
        stats.mean_std()


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
    params = make_params({"data.root": str(root)})
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


def test_free_disk_space_is_checked_before_features_npy_is_created(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_ogg(root / "train_short_audio" / "a" / "x.ogg", tone(6.0))
    chunks = chunk_table([("train", "train_short_audio/a/x.ogg", 0.0, 5.0)] * 3)
    needed = 3 * 128 * 501 * 2
    free = {"bytes": needed + DISK_MARGIN_BYTES - 1}
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 0, free["bytes"]))
    with pytest.raises(DiskSpaceError) as error:
        run_featurize(chunks, root, tmp_path / "features")
    message = str(error.value)
    assert f"needs {needed / 2**20:.1f} MiB" in message
    assert f"has only {(needed + DISK_MARGIN_BYTES - 1) / 2**20:.1f} MiB free" in message
    assert "data.max_chunks_per_recording" in message
    assert not (tmp_path / "features" / "features.npy").exists()

    free["bytes"] = needed + DISK_MARGIN_BYTES
    report, _ = run_featurize(chunks, root, tmp_path / "features2")
    assert report["chunks_valid"] == 3


def test_disk_space_message_uses_gib_for_large_features(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 0, 3 * 2**30))
    with pytest.raises(DiskSpaceError, match=r"needs 12\.00 GiB .* has only 3\.00 GiB free"):
        check_free_space(tmp_path / "not" / "yet" / "features.npy", 12 * 2**30)


# ------------------------------------------------------- the whole stage against an independent path

def test_stored_features_match_librosa_on_the_samples_written(tmp_path):
    """decode -> cut -> log-mel -> float16 store, checked against librosa's mel spectrogram computed
    from the very samples written to the file (a 32 kHz float WAV: no resampling, exact decoding)."""
    import librosa

    root = tmp_path / "data"
    audio = np.concatenate([tone(6.0, freq=900, seed=1), tone(6.0, freq=5200, amplitude=0.05, seed=2),
                            tone(5.0, freq=11000, amplitude=0.2, noise=0.1, seed=3)])
    path = root / "train_short_audio" / "a" / "x.wav"
    path.parent.mkdir(parents=True)
    sf.write(path, audio, SR, subtype="FLOAT")
    windows = [(0.0, 5.0), (3.21, 5.0), (11.5, 5.0), (14.0, 3.0)]  # the last one zero-padded after 3 s
    chunks = chunk_table([("train", "train_short_audio/a/x.wav", start, a) for start, a in windows])
    report, params = run_featurize(chunks, root, tmp_path / "features")
    stored = np.load(tmp_path / "features" / "features.npy")
    fp = params.features
    for k, (start, audio_s) in enumerate(windows):
        chunk = np.zeros(5 * SR, dtype=np.float32)
        piece = audio[round(start * SR):round((start + audio_s) * SR)]
        chunk[:len(piece)] = piece
        power = librosa.feature.melspectrogram(
            y=chunk, sr=SR, n_fft=fp.n_fft, hop_length=fp.hop_length(SR), win_length=fp.win_length(SR),
            window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=fp.n_mels, fmin=fp.fmin,
            fmax=fp.fmax, htk=True, norm=None)
        expected = np.log(power + LOG_OFFSET)
        got = stored[k].astype(np.float32)
        assert got.shape == expected.shape
        # float16 keeps 11 bits: 0.004 steps at |x| < 8, 0.008 up to 16.
        np.testing.assert_allclose(got, expected, rtol=0, atol=0.02)

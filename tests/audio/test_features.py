"""Stage featurize's work (stages/audio/features.py and store.py): the feature array, its index and
statistics, CPU workers against the in-process path, unusable audio, memory and disk space, and the
stored features against an independent librosa computation."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from helpers import chunk_table, make_params, run_featurize, tone, write_ogg
from stages.audio.decode import cut_chunk, decode_mono
from stages.audio.logmel import LOG_OFFSET, CpuLogMel, LogMel
from stages.audio.features import RecordingChunks, _feature_rows
from stages.birdclef.tables import build_tables
from stages.core.problems import DatasetError, Problems

SR = 32000


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
    write_ogg(root / "train_short_audio" / "a" / "tone.ogg", tone(6.0))
    chunks = chunk_table([("train", "train_short_audio/a/silent.ogg", 0.0, 5.0),
                          ("train", "train_short_audio/a/tone.ogg", 0.0, 5.0)])
    run_featurize(chunks, root, tmp_path / "features")
    features = np.load(tmp_path / "features" / "features.npy").astype(np.float32)
    assert np.isfinite(features).all()
    assert features[0].max() <= math.log(LOG_OFFSET) + 1.0
    stats = json.loads((tmp_path / "features" / "stats.json").read_text())
    assert math.isfinite(stats["mean"]) and stats["std"] > 0


def test_all_silent_training_audio_stops_featurize_with_what_it_means(tmp_path):
    """A zero spread would make normalisation divide by zero: the stage says so instead of writing it."""
    root = tmp_path / "data"
    write_ogg(root / "train_short_audio" / "a" / "silent.ogg", np.zeros(6 * SR, dtype=np.float32))
    chunks = chunk_table([("train", "train_short_audio/a/silent.ogg", 0.0, 5.0)])
    with pytest.raises(DatasetError, match="no spread .* digital silence"):
        run_featurize(chunks, root, tmp_path / "features")
    assert not (tmp_path / "features" / "stats.json").exists()


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

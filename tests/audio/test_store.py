"""Writing data/features/ (stages/audio/store.py): the train statistics refuse non-finite values and
name where they came from, and the free disk space is checked before features.npy is created."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import chunk_table, run_featurize, tone, write_ogg
from stages.audio.store import DISK_MARGIN_BYTES, DiskSpaceError, TrainStats, check_free_space



@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_train_stats_refuse_non_finite_values(value):
    stats = TrainStats(np.array([True, True, False]))
    stats.add(np.array([0]), np.arange(6, dtype=np.float16).reshape(1, 2, 3))
    stats.add(np.array([2]), np.full((1, 2, 3), value, dtype=np.float16))  # a valid row: not counted
    assert stats.mean_std() == (2.5, pytest.approx(np.std(np.arange(6))))
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


@pytest.mark.parametrize("value", [-13.8155, 0.0])
def test_silent_training_audio_is_refused_not_normalised_by_zero(value):
    """All-silent train audio gives one constant log-mel value: a zero std that normalisation would
    divide by (the first sign used to be NaN inputs in training)."""
    stats = TrainStats(np.array([True, True]))
    stats.add(np.array([0, 1]), np.full((2, 4, 5), value, dtype=np.float16), "silent.ogg")
    with pytest.raises(ValueError, match=r"no spread \(std \S+ over 40 values.*digital silence"):
        stats.mean_std()

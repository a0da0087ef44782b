"""The tables of stage prepare (stages/birdclef/tables.py): the split by recording, weak targets and
labels, soundscape windows, duplicates, and the stage's outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import make_dataset, make_params, metadata_row, run_stage, tone, write_metadata, write_ogg, write_params
from stages.birdclef.tables import CHUNK_COLUMNS, build_tables, split_by_recording
from stages.core.problems import DatasetError, Problems


# ------------------------------------------------------------------------------------- split

def test_split_is_stratified_per_class():
    sizes = {"a": 1, "b": 2, "c": 3, "d": 10, "e": 25}
    labels = pd.Series([code for code, n in sizes.items() for _ in range(n)])
    split = split_by_recording(labels, valid_fraction=0.2, seed=0)
    assert set(split) == {"train", "valid"}
    for code, n in sizes.items():
        own = split[(labels == code).to_numpy()]
        n_valid = int((own == "valid").sum())
        if n < 2:
            assert n_valid == 0
        else:
            assert n_valid == int(np.clip(round(n * 0.2), 1, n - 1))
            assert (own == "train").sum() >= 1


def test_split_is_seeded():
    labels = pd.Series([f"c{i}" for i in range(10) for _ in range(10)])
    first = split_by_recording(labels, 0.3, seed=7)
    assert (first == split_by_recording(labels, 0.3, seed=7)).all()
    assert (first != split_by_recording(labels, 0.3, seed=8)).any()


def test_build_tables_keeps_each_recording_in_one_split(demo_root):
    p = make_params({"data.root": str(demo_root)})
    tables = build_tables(demo_root, p.data, p.seed, Problems(strict=True))
    chunks, targets, labels, classes, report = (tables.chunks, tables.targets, tables.labels,
                                                tables.classes, tables.report)
    assert list(chunks.columns) == CHUNK_COLUMNS
    assert (chunks["chunk_id"] == np.arange(len(chunks))).all()
    assert len(targets) == len(labels) == labels["target_row"].max() + 1
    assert (labels["target_row"] == np.arange(len(labels))).all()
    # No recording in two splits, every chunk of a recording in its recording's split and target row.
    per_item = chunks.groupby("item_id").agg(splits=("split", "nunique"), rows=("target_row", "nunique"))
    assert (per_item["splits"] == 1).all() and (per_item["rows"] == 1).all()
    assert labels["item_id"].is_unique
    merged = chunks.merge(labels[["target_row", "split", "item_id"]], on="target_row", suffixes=("", "_label"))
    assert (merged["split"] == merged["split_label"]).all()
    assert (merged["item_id"] == merged["item_id_label"]).all()
    # Stratified: with 3 recordings per class, every class has a valid recording.
    recordings = labels[labels["split"] != "soundscape"]
    assert set(recordings.loc[recordings["split"] == "valid", "primary_label"]) == set(classes)
    assert set(recordings.loc[recordings["split"] == "train", "primary_label"]) == set(classes)
    assert report["skipped"] == []
    assert sum(report["chunks"].values()) == len(chunks)


def test_build_tables_is_deterministic(demo_root):
    p = make_params({"data.root": str(demo_root)})
    first = build_tables(demo_root, p.data, 1, Problems(strict=True)).chunks
    again = build_tables(demo_root, p.data, 1, Problems(strict=True)).chunks
    pd.testing.assert_frame_equal(first, again)


def test_label_only_change_leaves_chunk_table_identical(demo_root):
    low = make_params({"data.root": str(demo_root), "data.secondary_label_weight": 0.2})
    high = make_params({"data.root": str(demo_root), "data.secondary_label_weight": 0.9})
    tables = build_tables(demo_root, low.data, low.seed, Problems(strict=True))
    chunks_low, targets_low = tables.chunks, tables.targets
    tables = build_tables(demo_root, high.data, high.seed, Problems(strict=True))
    chunks_high, targets_high = tables.chunks, tables.targets
    assert chunks_low.to_csv(index=False) == chunks_high.to_csv(index=False)
    secondary = np.isclose(targets_low, 0.2)
    assert secondary.any(), "the demo dataset should have secondary labels"
    np.testing.assert_allclose(targets_high[secondary], 0.9)
    np.testing.assert_array_equal(targets_low[~secondary], targets_high[~secondary])


def test_targets_labels_and_soundscapes(tmp_path):
    root = make_dataset(tmp_path / "data", species=("amerob", "norcar", "rocpig"), per_species=2)
    metadata = pd.read_csv(root / "train_metadata.csv")
    first_amerob = metadata.index[metadata["primary_label"] == "amerob"][0]
    metadata.loc[first_amerob, "secondary_labels"] = "['rocpig1', 'xxxunk', 'amerob', 'norcar']"
    metadata.to_csv(root / "train_metadata.csv", index=False)
    p = make_params({"data.root": str(root), "data.secondary_label_weight": 0.4})
    tables = build_tables(root, p.data, p.seed, Problems(strict=True))
    chunks, targets, labels, classes, report = (tables.chunks, tables.targets, tables.labels,
                                                tables.classes, tables.report)

    assert classes == ["amerob", "norcar", "rocpig"]
    row = labels[labels["item_id"] == "XC0000"].iloc[0]
    assert row["primary_label"] == "amerob"
    assert row["secondary_labels"] == "rocpig norcar"
    np.testing.assert_allclose(targets[row["target_row"]], [1.0, 0.4, 0.4])
    assert report["unknown_codes_dropped"] == {"xxxunk": 1}
    assert report["recordings_with_secondary_labels"] == 1
    other = labels[(labels["item_id"] != "XC0000") & (labels["split"] != "soundscape")]
    np.testing.assert_array_equal(targets[other["target_row"]].sum(axis=1), 1.0)

    scape = labels[labels["split"] == "soundscape"].set_index("item_id")
    assert scape.loc["10000_COR_5", "birds"] == "nocall"
    assert scape.loc["10000_COR_10", "birds"] == "amerob"
    np.testing.assert_array_equal(targets[scape.loc["10000_COR_5", "target_row"]], [0, 0, 0])
    np.testing.assert_array_equal(targets[scape.loc["10000_COR_10", "target_row"]], [1, 0, 0])
    scape_chunks = chunks[chunks["split"] == "soundscape"].set_index("item_id")
    assert scape_chunks.loc["10000_COR_10", "start_s"] == 5.0
    assert scape_chunks.loc["10000_COR_10", "audio_s"] == 5.0
    assert report["soundscape_windows"] == 2 and report["soundscape_nocall_windows"] == 1


def test_chunks_follow_durations_and_min_rating(tmp_path):
    root = tmp_path / "data"
    durations = {"XC1": 12.5, "XC2": 4.0, "XC3": 30.0, "XC4": 7.0}
    rows = []
    for name, seconds in durations.items():
        write_ogg(root / "train_short_audio" / "amerob" / f"{name}.ogg", tone(seconds))
        rows.append(metadata_row("amerob", f"{name}.ogg", rating=1.0 if name == "XC4" else 4.0))
    write_metadata(root, rows)
    p = make_params({"data.root": str(root), "data.min_rating": 2.0, "data.hop_seconds": 5.0,
                     "data.max_chunks_per_recording": 3})
    tables = build_tables(root, p.data, p.seed, Problems(strict=True))
    chunks, labels, report = tables.chunks, tables.labels, tables.report

    got = {item: list(zip(g["start_s"], g["audio_s"])) for item, g in chunks.groupby("item_id")}
    assert got == {"XC1": [(0.0, 5.0), (5.0, 5.0), (10.0, 2.5)], "XC2": [(0.0, 4.0)],
                   "XC3": [(0.0, 5.0), (10.0, 5.0), (25.0, 5.0)]}
    assert report["recordings_below_min_rating"] == 1
    assert "XC4" not in set(labels["item_id"])
    assert any("no soundscape labels" in w["reason"] for w in report["warnings"])


def test_prepare_main_writes_outputs(tmp_path, demo_root):
    params = write_params(tmp_path / "params.yaml", {"data.root": str(demo_root)})
    result = run_stage("stages.prepare", "--params", str(params), "--out", str(tmp_path / "prepared"),
                       "--report", str(tmp_path / "report.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "prepared"
    assert sorted(p.name for p in out.iterdir()) == ["chunks.csv", "classes.txt", "labels.csv", "targets.npy"]
    chunks = pd.read_csv(out / "chunks.csv")
    classes = (out / "classes.txt").read_text().split()
    targets = np.load(out / "targets.npy")
    assert targets.shape == (len(pd.read_csv(out / "labels.csv")), len(classes))
    assert classes == ["amerob", "norcar", "rocpig"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["skipped"] == [] and sum(report["chunks"].values()) == len(chunks)
    assert not list(tmp_path.glob(".*.tmp"))


# ----------------------------------------------------------------------------- duplicates

def duplicated_dataset(tmp_path):
    root = make_dataset(tmp_path / "data", species=("amerob", "norcar"), per_species=4, soundscape=False)
    metadata = pd.read_csv(root / "train_metadata.csv")
    same = metadata.iloc[[0]]  # XC0000, amerob, listed again as it is
    relabelled = metadata.iloc[[1]].assign(primary_label="norcar", secondary_labels="['amerob']")
    write_ogg(root / "train_short_audio" / "norcar" / "XC0001.ogg", tone(6.0))  # the file it now names
    pd.concat([metadata, same, relabelled, same]).to_csv(root / "train_metadata.csv", index=False)
    return root


def test_duplicate_rows_are_skipped_and_each_recording_is_in_one_split(tmp_path):
    root = duplicated_dataset(tmp_path)
    for seed in range(8):  # with the duplicates kept, some seed would put a copy in each split
        p = make_params({"data.root": str(root)})
        tables = build_tables(root, p.data, seed, Problems(strict=False))
        chunks, labels, report = tables.chunks, tables.labels, tables.report
        assert labels["item_id"].is_unique and len(labels) == 8
        assert (chunks.groupby("item_id")["split"].nunique() == 1).all()
        assert labels.set_index("item_id").loc["XC0001", "primary_label"] == "amerob"  # the first row
        skipped = [(s["row"], s["reason"]) for s in report["skipped"]]
        assert [row for row, _ in skipped] == [10, 11, 12]
        assert all("duplicate" in reason for _, reason in skipped)
        assert "already listed on row 2" in skipped[0][1] and "row 3" in skipped[1][1]
    with pytest.raises(DatasetError, match=r"train_metadata\.csv, row 10: duplicate"):
        build_tables(root, p.data, 0, Problems(strict=True))


# ---------------------------------------------------------------------- soundscape labels

def soundscape_rows(root, rows):
    pd.DataFrame([{"row_id": f"10000_COR_{s}", "site": "COR", "audio_id": 10000, "seconds": s, "birds": b}
                  for s, b in rows]).to_csv(root / "train_soundscape_labels.csv", index=False)


def test_soundscape_birds_that_are_not_classes_never_become_nocall(tmp_path):
    root = make_dataset(tmp_path / "data")  # classes amerob, norcar; a 10 s soundscape
    soundscape_rows(root, [(5, "xxxunk"), (10, "amerob xxxunk")])
    p = make_params({"data.root": str(root)})
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    chunks, labels, report = tables.chunks, tables.labels, tables.report

    scape = labels[labels["split"] == "soundscape"]
    assert list(scape["item_id"]) == ["10000_COR_10"] and list(scape["birds"]) == ["amerob"]
    assert [(s["row"], "not classes" in s["reason"]) for s in report["skipped"]] == [(2, True)]
    assert [(w["row"], "xxxunk" in w["reason"]) for w in report["warnings"]] == [(3, True)]
    assert report["soundscape_windows"] == len(scape) == (chunks["split"] == "soundscape").sum()
    assert report["soundscape_nocall_windows"] == (scape["birds"] == "nocall").sum() == 0
    assert report["soundscape_windows_with_unknown_birds"] == 1
    with pytest.raises(DatasetError, match="row 2: birds"):
        build_tables(root, p.data, p.seed, Problems(strict=True))


@pytest.mark.parametrize("seconds, birds, reason", [
    ("five", "amerob", "not a number"), ("", "amerob", "not a number"), ("inf", "amerob", "not a number"),
    (5, "", "empty birds"), (5, "AMEROB", "not species codes"), (5, "ame,rob", "not species codes"),
])
def test_bad_soundscape_rows_are_skipped(tmp_path, seconds, birds, reason):
    root = make_dataset(tmp_path / "data")
    soundscape_rows(root, [(10, "nocall"), (seconds, birds)])
    p = make_params({"data.root": str(root)})
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    report = tables.report
    assert [(s["file"].endswith("train_soundscape_labels.csv"), s["row"]) for s in report["skipped"]] == [(True, 3)]
    assert reason in report["skipped"][0]["reason"]
    assert report["soundscape_windows"] == report["soundscape_nocall_windows"] == 1
    with pytest.raises(DatasetError, match=f"row 3: .*{reason}"):
        build_tables(root, p.data, p.seed, Problems(strict=True))

import json
import math
import sys
import tracemalloc

import numpy as np
import pandas as pd
import pytest

from conftest import make_dataset, make_params, metadata_row, run_stage, tone, write_metadata, write_ogg, write_params
from stages.prepare import CHUNK_COLUMNS, build_tables, chunk_windows, split_by_recording
from stages.problems import DatasetError, Problems


def windows(duration, chunk=5.0, hop=5.0, min_remainder=2.0, max_chunks=100):
    return chunk_windows(duration, chunk, hop, min_remainder, max_chunks)


# ------------------------------------------------------------------------------- chunk_windows

def test_exact_multiple_has_only_full_chunks():
    assert windows(15.0) == [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]


@pytest.mark.parametrize("duration, tail", [(13.0, (10.0, 3.0)), (12.0, (10.0, 2.0)), (14.9, (10.0, 4.9))])
def test_tail_at_least_min_remainder_is_kept(duration, tail):
    assert windows(duration) == [(0.0, 5.0), (5.0, 5.0), tail]


@pytest.mark.parametrize("duration", [10.5, 11.0, 11.99])
def test_tail_shorter_than_min_remainder_is_dropped(duration):
    assert windows(duration) == [(0.0, 5.0), (5.0, 5.0)]


def test_recording_shorter_than_a_chunk():
    assert windows(3.2) == [(0.0, 3.2)]
    assert windows(2.0) == [(0.0, 2.0)]
    assert windows(1.99) == []
    assert windows(0.0) == []


def test_overlapping_hop():
    assert windows(10.0, hop=2.5, min_remainder=4.0) == [(0.0, 5.0), (2.5, 5.0), (5.0, 5.0)]
    # Full chunks every hop, then the tail from the next hop on if it holds >= min_remainder.
    assert windows(11.0, hop=2.5) == [(0.0, 5.0), (2.5, 5.0), (5.0, 5.0), (7.5, 3.5)]
    # A tail that ends where the last full chunk ends adds no audio: not kept.
    assert windows(10.0, hop=2.5) == [(0.0, 5.0), (2.5, 5.0), (5.0, 5.0)]


def test_max_chunks_spreads_evenly_keeping_first_and_last():
    all_windows = windows(50.0)
    assert len(all_windows) == 10
    assert windows(50.0, max_chunks=4) == [(0.0, 5.0), (15.0, 5.0), (30.0, 5.0), (45.0, 5.0)]
    # The tail counts as the last chunk.
    assert windows(52.5, max_chunks=3) == [(0.0, 5.0), (25.0, 5.0), (50.0, 2.5)]
    assert windows(50.0, max_chunks=1) == [(0.0, 5.0)]
    assert windows(50.0, max_chunks=10) == all_windows


def test_max_chunks_gives_distinct_chunks():
    for n in range(1, 12):
        kept = windows(55.0, max_chunks=n)
        assert len(kept) == n
        assert len(set(kept)) == n
        assert [s for s, _ in kept] == sorted(s for s, _ in kept)


@pytest.mark.parametrize("duration, expected", [
    (14.999999, [(0.0, 5.0), (5.0, 5.0), (10.0, 4.999999)]),
    (15.000001, [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]),
    (15.0 - 1e-12, [(0.0, 5.0), (5.0, 5.0), (10.0, 5.0)]),
    (479999 / 32000, [(0.0, 5.0), (5.0, 5.0), (10.0, 4.999969)]),
])
def test_floating_point_durations(duration, expected):
    assert windows(duration) == expected


@pytest.mark.parametrize("duration", [0.6, 1.0, 2.0, 2.4])
@pytest.mark.parametrize("min_remainder", [0.25, 0.3])
def test_small_hops_do_not_accumulate_error(duration, min_remainder):
    # Hops of 0.1 s added up drift (0.1 + 0.1 + 0.1 = 0.30000000000000004): the last full chunk
    # must still count as full, not turn into a tail just short of min_remainder.
    result = windows(duration, chunk=0.3, hop=0.1, min_remainder=min_remainder)
    n = round((duration - 0.3) / 0.1) + 1
    assert [s for s, _ in result] == [round(0.1 * i, 6) for i in range(n)]
    assert all(a == 0.3 for _, a in result)


def test_windows_stay_inside_the_recording():
    rng = np.random.default_rng(0)
    for duration in rng.uniform(0, 80, 300):
        for hop in (2.5, 5.0):
            result = windows(float(duration), hop=hop, max_chunks=6)
            assert (len(result) > 0) == (duration >= 2.0)
            assert len(result) <= 6
            for start, audio_s in result:
                assert 0 <= start < duration
                assert 2.0 - 1e-6 <= audio_s <= 5.0
                assert start + audio_s <= duration + 1e-6


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
    chunks, targets, labels, classes, report = build_tables(demo_root, p.data, p.seed, Problems(strict=True))
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
    first = build_tables(demo_root, p.data, 1, Problems(strict=True))[0]
    again = build_tables(demo_root, p.data, 1, Problems(strict=True))[0]
    pd.testing.assert_frame_equal(first, again)


def test_label_only_change_leaves_chunk_table_identical(demo_root):
    low = make_params({"data.root": str(demo_root), "data.secondary_label_weight": 0.2})
    high = make_params({"data.root": str(demo_root), "data.secondary_label_weight": 0.9})
    chunks_low, targets_low, *_ = build_tables(demo_root, low.data, low.seed, Problems(strict=True))
    chunks_high, targets_high, *_ = build_tables(demo_root, high.data, high.seed, Problems(strict=True))
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
    chunks, targets, labels, classes, report = build_tables(root, p.data, p.seed, Problems(strict=True))

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
    p = make_params({"data.root": str(root), "data.min_rating": 2.0, "data.max_chunks_per_recording": 3})
    chunks, _, labels, _, report = build_tables(root, p.data, p.seed, Problems(strict=True))

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


# ------------------------------------------------------- chunk_windows: counted, not enumerated

def enumerated_windows(duration, chunk, hop, min_remainder, max_chunks):
    """chunk_windows as it was when it listed every window (the reference for normal durations)."""
    windows = []
    start = 0.0
    while start + chunk <= duration + 1e-9:
        windows.append((start, chunk))
        start += hop
    tail = duration - start
    covered_until = windows[-1][0] + chunk if windows else 0.0
    if tail >= min_remainder and duration > covered_until + 1e-9:
        windows.append((start, tail))
    if len(windows) > max_chunks:
        keep = np.linspace(0, len(windows) - 1, max_chunks).round().astype(int)
        windows = [windows[i] for i in keep]
    return [(round(s, 6), round(a, 6)) for s, a in windows]


@pytest.mark.parametrize("chunk, hop, min_remainder", [
    (5.0, 5.0, 2.0), (5.0, 2.5, 2.0), (5.0, 2.5, 4.0), (0.3, 0.1, 0.25), (1.0, 1.0, 0.5),
    (7.0, 3.0, 1.0), (5.0, 7.5, 1.0), (4.9, 1.7, 0.3), (10.0, 0.5, 5.0),
])
def test_chunk_windows_match_the_enumerating_version(chunk, hop, min_remainder):
    rng = np.random.default_rng(round(100 * hop))
    span = 300 * hop  # up to ~300 windows: the reference enumerates them all
    durations = [*rng.uniform(0, span, 300), *rng.integers(0, span * 32000, 100) / 32000,
                 *np.round(rng.uniform(0, span, 100), 2),
                 *(k * hop + chunk + offset for k in range(20) for offset in (0.0, 1e-7, -1e-7)),
                 0.0, chunk, min_remainder, 479999 / 32000]
    for duration in map(float, durations):
        for max_chunks in (1, 2, 3, 7, 1000):
            assert (chunk_windows(duration, chunk, hop, min_remainder, max_chunks)
                    == enumerated_windows(duration, chunk, hop, min_remainder, max_chunks)), duration


def test_chunk_windows_cost_does_not_follow_the_claimed_duration():
    tracemalloc.start()
    try:
        result = windows(1e6, max_chunks=3)  # 200,000 windows when enumerated (~25 MB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result == [(0.0, 5.0), (500000.0, 5.0), (999995.0, 5.0)]
    assert peak < 200_000
    for duration in (1e9, 1e15, 1e300, sys.float_info.max):  # would take hours, then run out of memory
        assert [s for s, _ in windows(duration, max_chunks=3)][::2] == [0.0, duration - 5.0]
    with pytest.raises(ValueError, match="finite"):
        windows(math.inf)


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
        chunks, targets, labels, classes, report = build_tables(root, p.data, seed, Problems(strict=False))
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
    chunks, targets, labels, classes, report = build_tables(root, p.data, p.seed, Problems(strict=False))

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
    _, _, labels, _, report = build_tables(root, p.data, p.seed, Problems(strict=False))
    assert [(s["file"].endswith("train_soundscape_labels.csv"), s["row"]) for s in report["skipped"]] == [(True, 3)]
    assert reason in report["skipped"][0]["reason"]
    assert report["soundscape_windows"] == report["soundscape_nocall_windows"] == 1
    with pytest.raises(DatasetError, match=f"row 3: .*{reason}"):
        build_tables(root, p.data, p.seed, Problems(strict=True))

"""Bad files and rows: data.strict true stops the stage naming the file and row; false skips them
and lists them, with a reason, under `skipped` in the report. Nothing crashes; nothing half-written
stays behind."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import make_dataset, make_params, metadata_row, run_stage, tone, tree_hashes, write_ogg, write_params
from stages.audio.ogg import pages
from stages.audio.features import featurize
from stages.birdclef.tables import build_tables
from stages.core.problems import DatasetError, Problems

BAD_LINE = 8  # header is line 1, six good rows, then the bad one


def good_dataset(tmp_path):
    return make_dataset(tmp_path / "data", species=("amerob", "norcar"), per_species=3)


def add_row(root, filename="BAD.ogg", primary="amerob", **fields):
    metadata = pd.read_csv(root / "train_metadata.csv")
    row = {**metadata_row(primary, filename), **fields}
    pd.concat([metadata, pd.DataFrame([row])]).to_csv(root / "train_metadata.csv", index=False)
    return root / "train_short_audio" / primary / filename


def valid_ogg_bytes(tmp_path, seconds=6.0):
    return write_ogg(tmp_path / "source.ogg", tone(seconds, freq=2500), serial=77).read_bytes()


def missing(root, tmp_path):
    add_row(root)


def empty(root, tmp_path):
    add_row(root).write_bytes(b"")


def truncated_half(root, tmp_path):
    data = valid_ogg_bytes(tmp_path)
    add_row(root).write_bytes(data[:len(data) // 2])


def truncated_at_a_page_boundary(root, tmp_path):
    data = valid_ogg_bytes(tmp_path)
    add_row(root).write_bytes(data[:list(pages(data))[-1].offset])  # whole pages, but not the last


def header_only(root, tmp_path):
    data = valid_ogg_bytes(tmp_path)
    add_row(root).write_bytes(data[:len(data) // 10])


def text_file(root, tmp_path):
    add_row(root).write_text("primary_label,filename\nthis is not audio\n" * 20)


def outside_root(root, tmp_path):
    write_ogg(root.parent / "outside.ogg", tone(6.0))  # readable audio: only the path is wrong
    add_row(root, filename="../../../outside.ogg")


def malformed_labels(root, tmp_path):
    write_ogg(add_row(root, secondary_labels="['norcar'"), tone(6.0))


def code_in_labels(root, tmp_path):
    write_ogg(add_row(root, secondary_labels="__import__('os').system('x')"), tone(6.0))


def too_short(root, tmp_path):
    write_ogg(add_row(root), tone(1.0))


def bad_rating(root, tmp_path):
    write_ogg(add_row(root, rating="five stars"), tone(6.0))


def empty_primary(root, tmp_path):
    metadata = pd.read_csv(root / "train_metadata.csv")
    row = {**metadata_row("amerob", "BAD.ogg"), "primary_label": None}
    pd.concat([metadata, pd.DataFrame([row])]).to_csv(root / "train_metadata.csv", index=False)


# (make it bad, the file the problem is reported against, words of the reason)
BAD_RECORDINGS = {
    "missing": (missing, "BAD.ogg", "not found"),
    "empty": (empty, "BAD.ogg", "empty"),
    "truncated_half": (truncated_half, "BAD.ogg", "truncated"),
    "truncated_at_a_page_boundary": (truncated_at_a_page_boundary, "BAD.ogg", "truncated"),
    "header_only": (header_only, "BAD.ogg", "no samples"),
    "text_file": (text_file, "BAD.ogg", "not a readable audio file"),
    "outside_root": (outside_root, "train_metadata.csv", "not a plain file name"),
    "malformed_labels": (malformed_labels, "train_metadata.csv", "malformed secondary_labels"),
    "code_in_labels": (code_in_labels, "train_metadata.csv", "malformed secondary_labels"),
    "too_short": (too_short, "BAD.ogg", "min_remainder_seconds"),
    "bad_rating": (bad_rating, "train_metadata.csv", "not a number"),
    "empty_primary": (empty_primary, "train_metadata.csv", "empty primary_label"),
}


def prepare(root, strict):
    params = make_params({"data.root": str(root), "data.strict": strict})
    return build_tables(root, params.data, params.seed, Problems(strict=strict))


def test_the_good_dataset_is_good(tmp_path):
    tables = prepare(good_dataset(tmp_path), strict=True)
    labels, report = tables.labels, tables.report
    assert report["skipped"] == [] and (labels["split"] != "soundscape").sum() == 6


@pytest.mark.parametrize("case", BAD_RECORDINGS)
def test_bad_recording_is_skipped_with_a_reason(tmp_path, case):
    make_bad, where, reason = BAD_RECORDINGS[case]
    root = good_dataset(tmp_path)
    make_bad(root, tmp_path)
    tables = prepare(root, strict=False)
    chunks, labels, classes, report = tables.chunks, tables.labels, tables.classes, tables.report

    assert len(report["skipped"]) == 1, report["skipped"]
    skipped = report["skipped"][0]
    assert skipped["file"].endswith(where)
    assert skipped["row"] == BAD_LINE
    assert reason in skipped["reason"]
    recordings = labels[labels["split"] != "soundscape"]
    assert len(recordings) == 6 and "BAD" not in set(recordings["item_id"])
    assert not chunks["path"].str.contains("BAD|outside").any()
    assert classes == ["amerob", "norcar"]
    json.dumps(report)  # the report stays writable


@pytest.mark.parametrize("case", BAD_RECORDINGS)
def test_bad_recording_stops_a_strict_run(tmp_path, case):
    make_bad, where, reason = BAD_RECORDINGS[case]
    root = good_dataset(tmp_path)
    make_bad(root, tmp_path)
    with pytest.raises(DatasetError) as error:
        prepare(root, strict=True)
    message = str(error.value)
    assert where in message and f"row {BAD_LINE}" in message and reason in message
    assert "data.strict" in message


# -------------------------------------------------------------------------------- soundscapes

def test_bad_soundscapes_are_skipped(tmp_path):
    root = good_dataset(tmp_path)
    (root / "train_soundscapes" / "stray.ogg").write_text("not even audio")
    labels = pd.read_csv(root / "train_soundscape_labels.csv")
    extra = [
        {"row_id": "10000_COR_15", "site": "COR", "audio_id": 10000, "seconds": 15, "birds": "nocall"},
        {"row_id": "20000_SSW_5", "site": "SSW", "audio_id": 20000, "seconds": 5, "birds": "nocall"},
        {"row_id": "30000_SSW_5", "site": "SSW", "audio_id": 30000, "seconds": 5, "birds": "norcar"},
    ]
    pd.concat([labels, pd.DataFrame(extra)]).to_csv(root / "train_soundscape_labels.csv", index=False)
    data = valid_ogg_bytes(tmp_path, seconds=10.0)
    (root / "train_soundscapes" / "30000_SSW_20200101.ogg").write_bytes(data[:len(data) // 2])

    tables = prepare(root, strict=False)

    table, report = tables.labels, tables.report
    reasons = {(s["file"].rsplit("/", 1)[-1], s["row"]): s["reason"] for s in report["skipped"]}
    assert "not <audio_id>_<SITE>" in reasons[("stray.ogg", None)]
    assert "lies outside" in reasons[("train_soundscape_labels.csv", 4)]
    assert "no file" in reasons[("train_soundscape_labels.csv", 5)]
    assert "truncated" in reasons[("30000_SSW_20200101.ogg", 6)]
    assert len(reasons) == 4
    assert sorted(table.loc[table["split"] == "soundscape", "item_id"]) == ["10000_COR_10", "10000_COR_5"]
    with pytest.raises(DatasetError, match="stray.ogg"):
        prepare(root, strict=True)


# --------------------------------------------------------------------- featurize on bad audio

def featurize_bad_file(tmp_path, strict):
    """Chunks of a good dataset whose first train file went bad after prepare read its header."""
    root = good_dataset(tmp_path)
    params = make_params({"data.root": str(root), "features.workers": 0, "data.strict": strict})
    chunks = build_tables(root, params.data, params.seed, Problems(strict=True)).chunks
    bad = chunks.loc[chunks["split"] == "train", "path"].iloc[0]
    (root / bad).write_text("no longer audio")
    out = tmp_path / "features"
    out.mkdir()

    def run():
        return featurize(chunks, root, params.data, params.features, out, Problems(strict=strict))
    return chunks, bad, out, run


def test_featurize_skips_undecodable_audio(tmp_path):
    chunks, bad, out, run = featurize_bad_file(tmp_path, strict=False)
    report = run()
    assert len(report["skipped"]) == 1
    assert report["skipped"][0]["file"].endswith(bad)
    assert "cannot decode audio" in report["skipped"][0]["reason"]
    index = pd.read_csv(out / "index.csv")
    bad_rows = (chunks["path"] == bad).to_numpy()
    assert (index["valid"].to_numpy() == ~bad_rows).all()
    features = np.load(out / "features.npy")
    assert (features[bad_rows] == 0).all() and np.isfinite(features).all()
    assert report["chunks_valid"] == int((~bad_rows).sum())


def test_featurize_stops_a_strict_run(tmp_path):
    _, bad, _, run = featurize_bad_file(tmp_path, strict=True)
    with pytest.raises(DatasetError) as error:
        run()
    assert f"{bad}: cannot decode audio" in str(error.value)


# -------------------------------------------------- a failing stage leaves no (new) output

def bad_project(tmp_path):
    root = good_dataset(tmp_path)
    text_file(root, tmp_path)
    return root


def prepare_cli(tmp_path, strict):
    params = write_params(tmp_path / f"params_{strict}.yaml",
                          {"data.root": str(tmp_path / "data"), "data.strict": strict})
    return run_stage("stages.prepare", "--params", str(params), "--out", str(tmp_path / "out" / "prepared"),
                     "--report", str(tmp_path / "out" / "report.json"), cwd=tmp_path)


def test_failing_prepare_writes_nothing(tmp_path):
    bad_project(tmp_path)
    result = prepare_cli(tmp_path, strict=True)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "BAD.ogg" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_failing_prepare_keeps_the_previous_output(tmp_path):
    bad_project(tmp_path)
    first = prepare_cli(tmp_path, strict=False)
    assert first.returncode == 0, first.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["file"].rsplit("/", 1)[-1] for s in report["skipped"]] == ["BAD.ogg"]
    before = tree_hashes(tmp_path / "out")

    second = prepare_cli(tmp_path, strict=True)
    assert second.returncode != 0 and "BAD.ogg" in second.stderr
    assert tree_hashes(tmp_path / "out") == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["prepared", "report.json"]


def test_failing_featurize_keeps_the_previous_output(tmp_path):
    root = good_dataset(tmp_path)
    params = write_params(tmp_path / "params.yaml", {"data.root": str(root), "data.strict": True,
                                                     "features.workers": 0})
    prepared = run_stage("stages.prepare", "--params", str(params), "--out", str(tmp_path / "prepared"),
                         "--report", str(tmp_path / "data_report.json"), cwd=tmp_path)
    assert prepared.returncode == 0, prepared.stderr
    out = tmp_path / "features"
    out.mkdir()
    (out / "features.npy").write_bytes(b"previous run")
    chunks = pd.read_csv(tmp_path / "prepared" / "chunks.csv")
    (root / chunks["path"].iloc[-1]).write_text("no longer audio")  # the soundscape, decoded last

    result = run_stage("stages.featurize", "--params", str(params), "--chunks", str(tmp_path / "prepared" / "chunks.csv"),
                       "--out", str(out), "--report", str(tmp_path / "featurize_report.json"), cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "cannot decode audio" in result.stderr
    assert [p.name for p in out.iterdir()] == ["features.npy"]
    assert (out / "features.npy").read_bytes() == b"previous run"
    assert not (tmp_path / "featurize_report.json").exists()
    assert not list(tmp_path.glob(".*.tmp"))

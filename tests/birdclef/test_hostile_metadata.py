"""Hostile input for stage prepare: whatever the metadata, labels or headers say, every row ends as a
clean result or as a skip (or, with data.strict, a DatasetError) naming its file and row; never
another exception, never a silent wrong label, never work that follows what a header claims."""

import functools
import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers import (METADATA_COLUMNS, make_dataset, make_params, metadata_row, ogg_claiming, run_stage,
                     tone, write_metadata, write_ogg, write_params)
from stages.birdclef.prepared import read_classes
from stages.birdclef.labels import MalformedLabels, is_code, parse_secondary_labels
from stages.birdclef.metadata import read_metadata, read_table
from stages.audio.ogg import encode_ogg_vorbis
from stages.birdclef.tables import build_tables
from stages.core.problems import DatasetError, Problems

FAST = settings(max_examples=200, deadline=None)
ON_DISK = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODES = ["amerob", "norcar", "rocpig1", "rewbla"]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # surrogates cannot be UTF-8
code_like = st.one_of(st.sampled_from(CODES), st.sampled_from(CODES).map(lambda c: f" {c}\t"),
                      st.sampled_from(["ame rob", "AMEROB", "amérob", "am\x00rob", "", "nocall"]), text)
rating = st.one_of(st.floats(), st.integers(-10**30, 10**30), text,
                   st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "abc", "1e400", " 3.5 ", "-1"]))
secondary = st.one_of(st.lists(code_like, max_size=3).map(repr), text,
                      st.sampled_from(["[]", "", "['amerob'", "[__import__('os').getcwd()]", "[" * 500]))
filename = st.one_of(st.sampled_from(["XC1.ogg", "XC2.ogg", "XC1.ogg", "XC3.wav"]), text,
                     st.just("x" * 300 + ".ogg"), st.just("a\x00b.ogg"), st.just("../../x.ogg"))


# ------------------------------------------------------------------------- secondary labels

@FAST
@given(st.one_of(text, secondary, st.lists(text, max_size=4).map(repr), st.floats(), st.integers(),
                 st.none(), st.binary(max_size=20).map(repr)))
def test_secondary_labels_are_codes_or_malformed(cell):
    with mock.patch("builtins.eval", side_effect=AssertionError("eval")), \
            mock.patch("builtins.exec", side_effect=AssertionError("exec")):
        try:
            codes = parse_secondary_labels(cell)
        except MalformedLabels as err:
            assert len(str(err)) < 300
            return
    assert isinstance(codes, list) and all(is_code(code) for code in codes)


# ----------------------------------------------------------------------- the metadata parser

def metadata_table(rows: list[dict], folder: Path) -> pd.DataFrame:
    frame = pd.DataFrame([{**metadata_row("amerob", "X.ogg"), **row} for row in rows], columns=METADATA_COLUMNS)
    frame.to_csv(folder / "train_metadata.csv", index=False)
    return read_table(folder / "train_metadata.csv", ["primary_label", "secondary_labels", "filename", "rating"])


metadata_rows = st.lists(st.fixed_dictionaries({"primary_label": code_like, "secondary_labels": secondary,
                                                "filename": filename, "rating": rating}), min_size=1, max_size=8)


@FAST
@given(metadata_rows, st.sampled_from([0.0, 2.5]), st.booleans())
def test_every_metadata_row_is_kept_skipped_or_counted(rows, min_rating, strict):
    p = make_params({"data.min_rating": min_rating}).data
    with tempfile.TemporaryDirectory() as folder:
        table = metadata_table(rows, Path(folder))
    assume(len(table) == len(rows))  # (a bare "\r" can split a CSV row: not what this test is about)
    problems = Problems(strict=strict)
    try:
        kept, n_below = read_metadata(table, "train_metadata.csv", p, problems)
    except DatasetError as err:
        assert strict and "train_metadata.csv, row " in str(err)
        return
    skipped_rows = [s["row"] for s in problems.skipped]
    assert len(set(skipped_rows)) == len(skipped_rows) and set(skipped_rows) <= set(range(2, len(rows) + 2))
    assert all(isinstance(s["reason"], str) and s["reason"] for s in problems.skipped)
    assert len(kept) + len(skipped_rows) + n_below == len(rows)
    assert len({row["item_id"] for row in kept}) == len(kept)  # no recording twice
    for row in kept:
        assert is_code(row["primary_label"]) and all(is_code(code) for code in row["raw_secondary"])
        assert "\x00" not in row["filename"] and row["line"] not in skipped_rows
        raw = table.iloc[row["line"] - 2]["rating"]
        if min_rating > 0:
            assert float(raw) >= min_rating
    json.dumps(problems.skipped)


def test_missing_and_non_numeric_ratings(tmp_path):
    rows = [{"rating": r, "filename": f"XC{i}.ogg"} for i, r in enumerate(["", "nan", "abc", "1.0", "4", "inf"])]
    table = metadata_table(rows, tmp_path)
    for min_rating, kept_lines, reasons in [
        (0.0, [2, 3, 5, 6], {4: "not a number", 7: "not a number"}),
        (2.5, [6], {2: "no rating", 3: "no rating", 4: "not a number", 7: "not a number"}),
    ]:
        problems = Problems(strict=False)
        kept, n_below = read_metadata(table, "m.csv", make_params({"data.min_rating": min_rating}).data, problems)
        assert [row["line"] for row in kept] == kept_lines
        assert {s["row"] for s in problems.skipped} == reasons.keys()
        assert all(reasons[s["row"]] in s["reason"] for s in problems.skipped)
        assert n_below == (1 if min_rating else 0)


@pytest.mark.parametrize("min_rating", [0.0, 2.5])
def test_an_unrated_recording_does_not_pass_a_rating_filter(tmp_path, min_rating):
    root = make_dataset(tmp_path / "data", soundscape=False)
    metadata = pd.read_csv(root / "train_metadata.csv")
    metadata.loc[0, "rating"] = None  # XC0000: the rating cell is empty
    metadata.to_csv(root / "train_metadata.csv", index=False)
    p = make_params({"data.root": str(root), "data.min_rating": min_rating})
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    labels, report = tables.labels, tables.report
    assert ("XC0000" in set(labels["item_id"])) == (min_rating == 0)
    assert [(s["row"], "no rating" in s["reason"]) for s in report["skipped"]] == ([(2, True)] if min_rating else [])


def test_codes_with_whitespace_never_split_classes_from_target_columns(tmp_path):
    root = make_dataset(tmp_path / "data", soundscape=False)
    rows = [(" amerob", "amerob", "[]"), ("amerob\t", "amerob", "['norcar ']"), ("ame rob", "ame rob", "[]"),
            ("norcar", "norcar", "['ame rob']")]
    metadata = pd.read_csv(root / "train_metadata.csv")
    for k, (code, folder, secondary) in enumerate(rows):
        write_ogg(root / "train_short_audio" / folder / f"WS{k}.ogg", tone(6.0))
    extra = [metadata_row(code, f"WS{k}.ogg", secondary) for k, (code, _, secondary) in enumerate(rows)]
    pd.concat([metadata, pd.DataFrame(extra)]).to_csv(root / "train_metadata.csv", index=False)
    params = write_params(tmp_path / "params.yaml", {"data.root": str(root)})
    result = run_stage("stages.prepare", "--params", str(params), "--out", str(tmp_path / "out"),
                       "--report", str(tmp_path / "report.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    classes = read_classes(tmp_path / "out")  # as train and evaluate read them
    assert classes == ["amerob", "norcar"] == (tmp_path / "out" / "classes.txt").read_text().splitlines()
    assert np.load(tmp_path / "out" / "targets.npy").shape[1] == len(classes)
    labels = pd.read_csv(tmp_path / "out" / "labels.csv", keep_default_na=False).set_index("item_id")
    assert labels.loc[["WS0", "WS1"], "primary_label"].tolist() == ["amerob", "amerob"]
    assert labels.loc["WS1", "secondary_labels"] == "norcar"
    report = json.loads((tmp_path / "report.json").read_text())
    assert [(s["row"], "'ame rob' is not a species code" in s["reason"]) for s in report["skipped"]] == \
        [(10, True), (11, True)]
    strict = write_params(tmp_path / "strict.yaml", {"data.root": str(root), "data.strict": True})
    result = run_stage("stages.prepare", "--params", str(strict), "--out", str(tmp_path / "out2"),
                       "--report", str(tmp_path / "report2.json"), cwd=tmp_path)
    assert result.returncode != 0 and "row 10: primary_label 'ame rob' is not a species code" in result.stderr


# ------------------------------------------------------------------ whole datasets on disk

@functools.cache
def audio_pool() -> dict[str, bytes]:
    """Bytes of small files written into generated datasets (encoded once)."""
    pool = {f"s{seconds}": encode_ogg_vorbis(tone(seconds), 32000, serial=seconds) for seconds in (1, 3, 12)}
    return {**pool, "huge": ogg_claiming(10**9 * 32000),  # claims 1e9 s
            "empty": b"", "text": b"not audio at all" * 10}


SCAPE = "10000_COR_20200101.ogg"
dataset_rows = st.lists(st.fixed_dictionaries({
    "primary_label": st.sampled_from([*CODES, " amerob", "norcar\t", "ame rob", "AMEROB", ""]),
    "secondary_labels": st.sampled_from(["[]", "['amerob', 'xxxunk']", "['ame rob']", "['rocpig1']", "", "[1]"]),
    "filename": st.sampled_from(["XC1.ogg", "XC2.ogg", "XC3.ogg", "XC4.ogg", "XC1.ogg", "../XC5.ogg", "a\x00.ogg"]),
    "rating": st.sampled_from([4.0, 1.0, "", "abc", "nan", "inf"]),
    "audio": st.sampled_from(["s1", "s3", "s12", "s12", "huge", "empty", "text", None]),
}), min_size=1, max_size=6)
scape_rows = st.lists(st.tuples(st.sampled_from(["5", "10", "10", "15", "abc", ""]),
                                st.sampled_from(["nocall", "amerob", "xxxunk", "amerob xxxunk", "AMEROB", "",
                                                 "rocpig1 nocall"])), max_size=4)


def write_dataset(root: Path, rows: list[dict], scape: list[tuple], audio_pool: dict) -> None:
    for row in rows:
        folder = root / "train_short_audio" / row["primary_label"].strip()
        target = folder / row["filename"]
        if row["audio"] and "\x00" not in row["filename"] and row["primary_label"].strip() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(audio_pool[row["audio"]])
    write_metadata(root, [{**metadata_row("x", "x"), **{k: v for k, v in row.items() if k != "audio"}}
                          for row in rows])
    (root / "train_soundscapes").mkdir()
    (root / "train_soundscapes" / SCAPE).write_bytes(audio_pool["s12"])
    pd.DataFrame([{"row_id": f"10000_COR_{seconds}", "site": "COR", "audio_id": "10000", "seconds": seconds,
                   "birds": birds} for seconds, birds in scape],
                 columns=["row_id", "site", "audio_id", "seconds", "birds"]).to_csv(
        root / "train_soundscape_labels.csv", index=False)


def is_soundscape_entry(entry: dict) -> bool:
    return "train_soundscape" in entry["file"]


@ON_DISK
@given(rows=dataset_rows, scape=scape_rows, min_rating=st.sampled_from([0.0, 2.5]), strict=st.booleans(),
       max_chunks=st.integers(1, 3))
def test_any_dataset_ends_clean_or_names_its_problems(rows, scape, min_rating, strict, max_chunks):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        write_dataset(root, rows, scape, audio_pool())
        p = make_params({"data.root": str(root), "data.min_rating": min_rating, "data.strict": strict,
                         "data.max_chunks_per_recording": max_chunks})
        try:
            tables = build_tables(root, p.data, p.seed, Problems(strict))
            chunks, targets, labels, classes, report = (tables.chunks, tables.targets, tables.labels,
                                                        tables.classes, tables.report)
        except DatasetError as err:
            assert str(err).startswith(str(root)), str(err)  # names its file
            assert strict or ", row " not in str(err)  # not strict: only whole tables stop the stage
            return
    assert classes == sorted(set(labels.loc[labels["split"] != "soundscape", "primary_label"]))
    assert all(is_code(code) for code in classes) and targets.shape == (len(labels), len(classes))
    assert labels["item_id"].is_unique
    per_item = chunks.groupby("item_id").agg(splits=("split", "nunique"), n=("chunk_id", "size"))
    assert (per_item["splits"] == 1).all() and (per_item["n"] <= max_chunks).all()
    skipped = report["skipped"]
    recordings = sum(report["recordings"].values())
    metadata_rows = {s["row"] for s in skipped if not is_soundscape_entry(s)}
    assert recordings + len(metadata_rows) + report["recordings_below_min_rating"] == len(rows)
    scape_labels = labels[labels["split"] == "soundscape"]
    scape_rows_skipped = {s["row"] for s in skipped if is_soundscape_entry(s)}
    assert len(scape_labels) + len(scape_rows_skipped) == len(scape)
    assert report["soundscape_windows"] == len(scape_labels) == (chunks["split"] == "soundscape").sum()
    assert report["soundscape_nocall_windows"] == (scape_labels["birds"] == "nocall").sum()
    written = dict(zip(scape_labels["item_id"], scape_labels["birds"]))
    first_rows = dict(reversed(scape))  # the first row of a row_id counts
    for seconds, birds in first_rows.items():  # a window labelled nocall had no bird in its cell
        if written.get(f"10000_COR_{seconds}") == "nocall":
            assert set(birds.split()) <= {"nocall"}
    json.dumps(report)

"""Metadata tables prepare cannot use at all (stages/birdclef/metadata.py): empty, without the
required columns, a header only, not a readable CSV, missing, or without one usable recording. Each
stops the stage with a DatasetError naming the file, whatever data.strict says: there is nothing to
skip to."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from helpers import make_dataset, make_params, metadata_row
from stages.birdclef.tables import build_tables
from stages.birdclef.tables import prepare as run_prepare
from stages.core.problems import DatasetError, Problems


def good_dataset(tmp_path):
    return make_dataset(tmp_path / "data", species=("amerob", "norcar"), per_species=3)


def prepare(root, strict):
    params = make_params({"data.root": str(root), "data.strict": strict})
    return build_tables(root, params.data, params.seed, Problems(strict=strict))


@pytest.mark.parametrize("strict", [True, False])
def test_empty_metadata_file(tmp_path, strict):
    root = good_dataset(tmp_path)
    (root / "train_metadata.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"train_metadata\.csv: the file is empty"):
        prepare(root, strict)


@pytest.mark.parametrize("strict", [True, False])
def test_metadata_without_required_columns(tmp_path, strict):
    root = good_dataset(tmp_path)
    metadata = pd.read_csv(root / "train_metadata.csv")
    metadata.drop(columns=["filename", "rating"]).to_csv(root / "train_metadata.csv", index=False)
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['filename', 'rating'\]"):
        prepare(root, strict)


def test_metadata_with_a_header_only(tmp_path):
    root = good_dataset(tmp_path)
    (root / "train_metadata.csv").write_text("primary_label,secondary_labels,filename,rating\n")
    with pytest.raises(DatasetError, match="no rows"):
        prepare(root, strict=False)


@pytest.mark.parametrize("content", [
    bytes(range(256)) * 8,
    "primary_label,secondary_labels,filename,rating\namerob,[],XC0000.ogg,4\n".encode("utf-16"),
], ids=["binary", "utf-16"])
def test_unreadable_metadata(tmp_path, content):
    root = good_dataset(tmp_path)
    (root / "train_metadata.csv").write_bytes(content)
    with pytest.raises(DatasetError, match="not a readable CSV"):
        prepare(root, strict=False)


def test_missing_metadata_names_data_root(tmp_path):
    with pytest.raises(DatasetError, match="data.root"):
        prepare(tmp_path / "nowhere", strict=False)


def test_no_usable_recording(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    pd.DataFrame([metadata_row("amerob", "gone.ogg")]).to_csv(root / "train_metadata.csv", index=False)
    with pytest.raises(DatasetError, match="no usable recordings"):
        prepare(root, strict=False)




def test_no_recording_to_validate_on_stops_prepare_naming_the_species(tmp_path):
    """One recording per species leaves the valid split empty: say so at prepare, not after an epoch."""
    root = make_dataset(tmp_path / "data", species=("amerob", "norcar"), per_species=1)
    with pytest.raises(DatasetError) as raised:
        prepare(root, strict=False)
    assert str(raised.value).startswith(
        f"{root / 'train_metadata.csv'}: no recording can go to the valid split (data.valid_fraction: 0.2): "
        "every species has a single usable recording (amerob, norcar)")


def test_the_report_a_failure_points_to_is_written(tmp_path):
    """'each with its reason in the data report' must be true: the stage writes the report first."""
    root = tmp_path / "data"
    root.mkdir()
    pd.DataFrame([metadata_row("amerob", "gone.ogg")]).to_csv(root / "train_metadata.csv", index=False)
    params = make_params({"data.root": str(root), "data.strict": False})
    report = tmp_path / "reports" / "data_report.json"
    with pytest.raises(DatasetError, match=rf"no usable recordings.*\(data report: {re.escape(str(report))}\)"):
        run_prepare(params, tmp_path / "prepared", report)
    written = json.loads(report.read_text())
    assert "no usable recordings" in written["error"]
    assert [item["file"] for item in written["skipped"]] == [str(root / "train_short_audio" / "amerob" / "gone.ogg")]
    assert not (tmp_path / "prepared").exists()  # no tables from a failed run


def test_nan_and_null_are_species_codes_not_empty_cells(tmp_path):
    """pandas reads "nan", "null" and "NA" as missing by default; in a metadata table they are text."""
    root = make_dataset(tmp_path / "data", species=("nan", "null"), per_species=3)
    tables = prepare(root, strict=True)
    assert tables.classes == ["nan", "null"]
    assert not tables.report["skipped"]


def test_soundscape_labels_with_a_header_only_are_treated_as_absent(tmp_path):
    root = good_dataset(tmp_path)
    labels = root / "train_soundscape_labels.csv"
    labels.write_text(labels.read_text().splitlines()[0] + "\n")
    tables = prepare(root, strict=True)
    assert tables.report["soundscape_windows"] == 0
    assert any("a header and no rows" in warning["reason"] for warning in tables.report["warnings"])


def test_one_window_under_two_row_ids_is_reported_not_counted_twice(tmp_path):
    root = good_dataset(tmp_path)
    labels = pd.read_csv(root / "train_soundscape_labels.csv")
    twin = {"row_id": "10000_COR_10b", "site": "COR", "audio_id": 10000, "seconds": 10, "birds": "norcar"}
    pd.concat([labels, pd.DataFrame([twin])]).to_csv(root / "train_soundscape_labels.csv", index=False)
    tables = prepare(root, strict=False)
    assert tables.report["soundscape_windows"] == 2
    (skipped,) = tables.report["skipped"]
    assert skipped["row"] == 4 and "already labelled on row 3 with other birds" in skipped["reason"]


def test_two_files_for_one_audio_id_and_site_are_both_named(tmp_path):
    root = good_dataset(tmp_path)
    original = next((root / "train_soundscapes").glob("*.ogg"))
    (root / "train_soundscapes" / "10000_COR_20210101.ogg").write_bytes(original.read_bytes())
    tables = prepare(root, strict=False)
    assert tables.report["soundscape_windows"] == 0
    ambiguous = [s for s in tables.report["skipped"] if "2 files match audio_id 10000 and site COR" in s["reason"]]
    assert len(ambiguous) == 2

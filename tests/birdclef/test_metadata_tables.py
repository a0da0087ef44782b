"""Metadata tables prepare cannot use at all (stages/birdclef/metadata.py): empty, without the
required columns, a header only, not a readable CSV, missing, or without one usable recording. Each
stops the stage with a DatasetError naming the file, whatever data.strict says: there is nothing to
skip to."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import make_dataset, make_params, metadata_row
from stages.birdclef.tables import build_tables
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



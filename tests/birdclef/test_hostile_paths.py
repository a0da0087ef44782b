"""Hostile headers and paths for stage prepare (stages/birdclef/metadata.py): a header claiming more
samples than the file's bytes can hold, a chained Ogg and a truncated one are skipped, each with what
it is, and no file name from the metadata reads or writes outside data.root or crashes the stage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import make_dataset, make_params, metadata_row, ogg_claiming, tone, write_ogg
from stages.audio.ogg import encode_ogg_vorbis, last_page
from stages.birdclef.metadata import MAX_SAMPLES_PER_BYTE, audio_duration
from stages.birdclef.tables import build_tables
from stages.core.problems import DatasetError, Problems


# ----------------------------------------------------------------------- headers and paths

def append_metadata(root: Path, rows: list[dict]) -> None:
    """Add `rows` to the dataset's train_metadata.csv, after the rows it has."""
    metadata = pd.read_csv(root / "train_metadata.csv")
    pd.concat([metadata, pd.DataFrame(rows)]).to_csv(root / "train_metadata.csv", index=False)


def ogg_claiming_seconds(seconds: float, sample_rate: int = 32000) -> bytes:
    """A real 3 s Ogg Vorbis file whose last page claims `seconds` (its granule position)."""
    return ogg_claiming(round(seconds * sample_rate), sample_rate)


def test_a_header_claiming_more_than_the_file_can_hold_is_skipped(tmp_path):
    root = make_dataset(tmp_path / "data", soundscape=False)
    (root / "train_short_audio" / "amerob" / "HUGE.ogg").write_bytes(ogg_claiming_seconds(1e9))  # 30 kB
    (root / "train_short_audio" / "amerob" / "LONG.ogg").write_bytes(ogg_claiming_seconds(4.0))  # a plausible lie
    rows = [metadata_row("amerob", "HUGE.ogg"), metadata_row("amerob", "LONG.ogg")]
    append_metadata(root, rows)
    p = make_params({"data.root": str(root)})
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    chunks, report = tables.chunks, tables.report
    assert [(s["file"].rsplit("/", 1)[-1], s["row"]) for s in report["skipped"]] == [("HUGE.ogg", 8)]
    assert "header claims 1000000000 s" in report["skipped"][0]["reason"]
    assert str(MAX_SAMPLES_PER_BYTE) in report["skipped"][0]["reason"]
    assert not chunks["path"].str.contains("HUGE").any()
    with pytest.raises(DatasetError, match="HUGE.ogg, row 8: header claims"):
        build_tables(root, p.data, p.seed, Problems(strict=True))


def hostile_paths(root: Path, outside: Path) -> dict[str, tuple[str, str, str]]:
    """Rows whose filename or label points somewhere it must not: {filename: (primary, file, reason)}."""
    amerob = root / "train_short_audio" / "amerob"
    (amerob / "LINK.ogg").symlink_to(outside)
    (amerob / "LOOP.ogg").symlink_to(amerob / "LOOP.ogg")
    long_code = "a" * 300  # a valid code, too long for a folder name
    return {"../../../outside.ogg": ("amerob", "train_metadata.csv", "not a plain file name"),
            str(outside.with_name("elsewhere.ogg")): ("amerob", "train_metadata.csv", "not a plain file name"),
            "LINK.ogg": ("amerob", "LINK.ogg", "outside data.root"),
            "LOOP.ogg": ("amerob", "LOOP.ogg", "cannot be opened"),
            "n" * 300 + ".ogg": ("amerob", ".ogg", "cannot be opened (OSError"),
            "LONGCODE.ogg": (long_code, "LONGCODE.ogg", "cannot be opened (OSError"),
            "a\x00b.ogg": ("amerob", "train_metadata.csv", "NUL byte")}


def dataset_with_hostile_paths(tmp_path: Path, only: int | None = None):
    root = make_dataset(tmp_path / "data", soundscape=False)
    outside = write_ogg(tmp_path / "outside.ogg", tone(6.0))  # readable audio: only the path is wrong
    write_ogg(tmp_path / "elsewhere.ogg", tone(6.0))
    cases = list(hostile_paths(root, outside).items())
    cases = cases if only is None else [cases[only]]
    rows = [metadata_row(primary, name) for name, (primary, _, _) in cases]
    append_metadata(root, rows)
    return root, [expected for _, expected in cases], make_params({"data.root": str(root)})


def test_paths_cannot_escape_data_root_or_crash_the_stage(tmp_path):
    root, cases, p = dataset_with_hostile_paths(tmp_path)
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    chunks, labels, report = tables.chunks, tables.labels, tables.report
    skipped = sorted(report["skipped"], key=lambda s: s["row"])
    assert [s["row"] for s in skipped] == list(range(8, 8 + len(cases)))
    for entry, (_, file, reason) in zip(skipped, cases):
        assert entry["file"].endswith(file) and reason in entry["reason"], entry
    assert len(labels) == 6 and chunks["path"].str.startswith("train_short_audio/").all()
    json.dumps(report)


@pytest.mark.parametrize("case", range(7))
def test_hostile_paths_stop_a_strict_run(tmp_path, case):
    root, [(_, file, reason)], p = dataset_with_hostile_paths(tmp_path, only=case)
    with pytest.raises(DatasetError) as error:
        build_tables(root, p.data, p.seed, Problems(strict=True))
    assert f"{file}, row 8: " in str(error.value) and reason in str(error.value)


@pytest.mark.parametrize("name", ["a\x00b.ogg", "x" * 5000 + ".ogg"])
def test_audio_duration_turns_unusable_paths_into_reasons(tmp_path, name):
    (tmp_path / "x").mkdir()
    duration, reason = audio_duration(tmp_path / "x" / name, tmp_path)
    assert duration is None and "cannot be opened" in reason


def test_a_filename_reaching_into_the_soundscapes_never_becomes_training_data(tmp_path):
    """`../../train_soundscapes/<file>` exists inside data.root, so containment alone let it through:
    an evaluation soundscape was then trained on."""
    root = make_dataset(tmp_path / "data")
    soundscape = next((root / "train_soundscapes").glob("*.ogg")).name
    sneaky = [metadata_row("amerob", f"../../train_soundscapes/{soundscape}"), metadata_row("amerob", "sub/x.ogg")]
    append_metadata(root, sneaky)
    p = make_params({"data.root": str(root)})
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    reasons = [s["reason"] for s in tables.report["skipped"]]
    assert len(reasons) == 2 and all("not a plain file name" in r for r in reasons), reasons
    training = tables.chunks[tables.chunks["split"].isin(["train", "valid"])]
    assert not training["path"].str.contains("train_soundscapes").any()


@pytest.mark.parametrize("second_seconds", [1.0, 60.0])
def test_a_chained_or_truncated_ogg_is_skipped_with_what_it_is(tmp_path, second_seconds):
    # libsndfile reads a chain of two streams as the first when the second is short, and reports no
    # length at all (2^63 - 1 frames) when the second is too long for its search from the end.
    root = make_dataset(tmp_path / "data", soundscape=False)
    folder = root / "train_short_audio" / "amerob"
    first = encode_ogg_vorbis(tone(6.0), 32000, serial=1)
    second = encode_ogg_vorbis(tone(second_seconds), 32000, serial=2)
    (folder / "CHAINED.ogg").write_bytes(first + second)
    (folder / "CUT.ogg").write_bytes(first[:last_page(first).offset])
    rows = [metadata_row("amerob", "CHAINED.ogg"), metadata_row("amerob", "CUT.ogg")]
    append_metadata(root, rows)
    p = make_params({"data.root": str(root)})
    tables = build_tables(root, p.data, p.seed, Problems(strict=False))
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in tables.report["skipped"]}
    assert reasons.keys() == {"CHAINED.ogg", "CUT.ogg"}
    assert reasons["CHAINED.ogg"].startswith("chained Ogg file")
    assert "serial 1 at its start, 2 at its end" in reasons["CHAINED.ogg"]
    assert reasons["CUT.ogg"].startswith("truncated Ogg file")
    assert not tables.chunks["path"].str.contains("CHAINED|CUT").any()

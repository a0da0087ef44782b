"""The BirdCLEF 2021 layout read row by row: the two CSV tables and the audio headers they point at.

Every bad row or file becomes one `Problems` entry naming the file and row (the CSV line, header =
row 1); no other exception escapes for bad data. Metadata rules, in order (the first broken names
the reason):
- filename: a non-empty name without NUL bytes. The first row of a recording counts; a later row
  with the same recording id (file name without extension: the outputs' `item_id`) is a duplicate,
  skipped whatever its labels, so no recording can be in two splits or be counted twice.
- rating: empty or NaN means "not rated". Not rated passes data.min_rating 0 (no filter) and fails
  any min_rating > 0 (it cannot be shown to pass; skipped with a reason). A rating that is not a
  finite number ("abc", "inf") is always skipped. Rated rows below min_rating are only counted.
- primary_label: a species code after `labels.normalize_code` (surrounding whitespace stripped),
  in the form `labels.is_code` checks (lowercase ASCII letters and digits); secondary_labels: a
  list of such codes (`labels.parse_secondary_labels`).
- the audio file: inside data.root (no "..", absolute path or symlink leading out), readable,
  whole (an Ogg file ends with an end-of-stream page of the one stream it begins with), and no
  longer than its size can hold (MAX_SAMPLES_PER_BYTE).
The soundscape labels are read by stages/birdclef/soundscapes.py with the same helpers.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from stages.audio.ogg import OggEnds, ogg_ends
from stages.birdclef.labels import (CODE_RULE, MalformedLabels, is_code, normalize_code,
                                    parse_secondary_labels, shown)
from stages.core.params import DataParams
from stages.core.problems import DatasetError, Problems

METADATA_FILE = "train_metadata.csv"
SHORT_AUDIO_DIR = "train_short_audio"
METADATA_REQUIRED = ["primary_label", "secondary_labels", "filename", "rating"]
# A header's length is only a number the file claims (an Ogg file's length is the granule position
# of its last page): a crafted 30 kB file can claim 10^9 seconds. No codec libsndfile reads packs
# more than this many samples (per channel) into one byte of file: an Ogg Vorbis packet costs at
# least one lacing byte and decodes to at most 4096 samples (half Vorbis's largest block, 8192); a
# FLAC frame of at most 65535 samples takes at least ~12 bytes; PCM holds at most 1 sample a byte.
# Real recordings are far below it (Vorbis-encoded silence at 32 kHz: ~250 samples a byte).
MAX_SAMPLES_PER_BYTE = 8192


def read_table(path: Path, required: list[str], allow_empty: bool = False) -> pd.DataFrame:
    """A whole CSV table, every cell a string ("" when empty), with the `required` columns; a header
    without rows is an error unless `allow_empty`."""
    if not path.is_file():
        raise DatasetError(f"{path}: not found. Point data.root in params.yaml at a folder in the "
                           "BirdCLEF 2021 layout (see README, 'Reproduce on BirdCLEF 2021').")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)  # "nan", "null", "NA" stay text
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty; expected a CSV with columns {required}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not a readable CSV ({err})") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    if table.empty and not allow_empty:
        raise DatasetError(f"{path}: has a header but no rows")
    return table


def is_missing(cell: object) -> bool:
    return cell is None or (isinstance(cell, float) and math.isnan(cell)) or str(cell).strip() == ""


def parse_number(cell: object) -> float | None:
    """A cell as a finite number, None when it is empty or NaN; ValueError for anything else."""
    if is_missing(cell):
        return None
    try:
        number = float(cell) if isinstance(cell, (str, int, float)) else math.inf
    except OverflowError:  # an int beyond floats
        number = math.inf
    if math.isnan(number):
        return None  # the text "nan"
    if not math.isfinite(number):
        raise ValueError(f"{shown(cell)} is not a finite number")
    return number


def recording_id(cell: object) -> str | None:
    """The recording id (file name without extension) of a filename cell; None if unusable."""
    if is_missing(cell) or not isinstance(cell, str) or "\x00" in cell:
        return None
    return Path(cell).stem or None


def metadata_row(row, line: int, where: str, p: DataParams, seen: dict[str, int],
                 problems: Problems) -> dict | None:
    """One metadata row checked as the module docstring says: its parsed fields, or None (skipped
    and recorded, or only counted when rated below min_rating: then {"below_rating": True})."""
    item_id = recording_id(row.filename)
    if item_id is None:
        problems.skip(where, line, f"filename {shown(row.filename)} is empty or holds a NUL byte")
        return None
    if row.filename in (".", "..") or "/" in row.filename or "\\" in row.filename:
        # `../../train_soundscapes/<file>` would turn an evaluation soundscape into training data.
        problems.skip(where, line, f"filename {shown(row.filename)} is not a plain file name: it would reach "
                                   f"outside {SHORT_AUDIO_DIR}/<primary_label>/")
        return None
    if item_id in seen:
        problems.skip(where, line, f"duplicate: recording {shown(item_id)} is already listed on row "
                                   f"{seen[item_id]} (the first row of a recording counts)")
        return None
    seen[item_id] = line
    try:
        rating = parse_number(row.rating)
    except ValueError:
        problems.skip(where, line, f"rating {shown(row.rating)} is not a number")
        return None
    if rating is None and p.min_rating > 0:
        problems.skip(where, line, f"no rating, so it cannot pass data.min_rating ({p.min_rating})")
        return None
    if rating is not None and rating < p.min_rating:
        return {"below_rating": True}
    primary = normalize_code(row.primary_label) if isinstance(row.primary_label, str) else ""
    if not is_code(primary):
        what = "empty primary_label" if is_missing(row.primary_label) else \
            f"primary_label {shown(row.primary_label)} is not a species code ({CODE_RULE})"
        problems.skip(where, line, what)
        return None
    try:
        secondaries = parse_secondary_labels(row.secondary_labels)
    except MalformedLabels as err:
        problems.skip(where, line, f"malformed secondary_labels: {err}")
        return None
    return {"item_id": item_id, "filename": row.filename, "primary_label": primary,
            "raw_secondary": secondaries, "line": line}


def read_metadata(table: pd.DataFrame, where: str, p: DataParams, problems: Problems) -> tuple[list[dict], int]:
    """The usable rows of a metadata table (no file system access), and how many were rated
    below data.min_rating."""
    rows, n_below_rating, seen = [], 0, {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        parsed = metadata_row(row, line, where, p, seen, problems)
        if parsed is not None and parsed.get("below_rating"):
            n_below_rating += 1
        elif parsed is not None:
            rows.append(parsed)
    return rows, n_below_rating


def read_recordings(root: Path, p: DataParams, problems: Problems) -> pd.DataFrame:
    """Metadata rows that point at usable audio, with parsed labels and durations."""
    metadata_name = str(root / METADATA_FILE)
    rows, n_below_rating = read_metadata(read_table(root / METADATA_FILE, METADATA_REQUIRED),
                                         metadata_name, p, problems)
    records = []
    for row in tqdm(rows, desc="prepare: reading headers", unit="file"):
        relative = Path(SHORT_AUDIO_DIR) / row["primary_label"] / row["filename"]
        duration, reason = audio_duration(root / relative, root)
        if reason is not None:
            problems.skip(str(root / relative), row["line"], reason)
            continue
        if duration < p.min_remainder_seconds:
            problems.skip(str(root / relative), row["line"],
                          f"recording is {duration:.2f} s, shorter than data.min_remainder_seconds "
                          f"({p.min_remainder_seconds} s)")
            continue
        records.append({"item_id": row["item_id"], "path": relative.as_posix(), "duration": duration,
                        "primary_label": row["primary_label"], "raw_secondary": row["raw_secondary"],
                        "line": row["line"]})
    if not records:
        raise DatasetError(f"{metadata_name}: no usable recordings; every row was skipped, each with its reason "
                           "in the data report")
    recordings = pd.DataFrame(records)
    recordings.attrs["n_below_rating"] = n_below_rating
    return recordings


def audio_duration(path: Path, root: Path) -> tuple[float | None, str | None]:
    """Duration from the file header, or the reason the file cannot be used."""
    try:
        if not path.resolve().is_relative_to(root.resolve()):
            return None, f"path points outside data.root ({root})"
        if not path.is_file():
            return None, "file not found"
        size = path.stat().st_size
    except (OSError, ValueError, RuntimeError) as err:
        # ENAMETOOLONG, a NUL byte in the name (ValueError), a symlink loop (RuntimeError)
        return None, f"the path cannot be opened ({type(err).__name__}: {err})"
    if size == 0:
        return None, "file is empty"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        return None, f"not a readable audio file ({err})"
    if info.frames <= 0 or info.samplerate <= 0:
        return None, "audio header reports no samples"
    ends = ogg_ends(path) if info.format == "OGG" else None
    if ends is not None and ends.chained:  # before the length: libsndfile may find none for a chain
        return None, chained_reason(ends)
    if info.frames > size * MAX_SAMPLES_PER_BYTE:
        return None, (f"header claims {info.frames / info.samplerate:.0f} s ({info.frames} samples), more "
                      f"than {size} bytes can hold (at most {MAX_SAMPLES_PER_BYTE} samples a byte)")
    if ends is not None and ends.truncated:
        return None, "truncated Ogg file (it does not end with an end-of-stream page)"
    return info.frames / info.samplerate, None


def chained_reason(ends: OggEnds) -> str:
    return (f"chained Ogg file: it holds more than one logical stream (serial {ends.first.serial} at its "
            f"start, {ends.last.serial} at its end), as `cat a.ogg b.ogg` makes, and libsndfile reads only "
            "the first; decode it and write it again as one stream to use it")

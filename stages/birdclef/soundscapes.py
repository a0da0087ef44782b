"""The labelled soundscapes of the BirdCLEF 2021 layout: train_soundscape_labels.csv read row by row
against the files of train_soundscapes/, every bad row or file one `Problems` entry.

Rules: a row_id listed once; `seconds` a finite number inside the file; `birds` species codes or
nocall (birds that are not classes: see tables.add_soundscapes); one file per (audio_id, site); one
row id per window. A labels file with a header and no rows counts as no labels file.
"""

from __future__ import annotations

from pathlib import Path

from stages.birdclef.labels import CODE_RULE, NOCALL, MalformedLabels, is_code, normalize_code, shown
from stages.birdclef.metadata import audio_duration, is_missing, parse_number, read_table
from stages.core.problems import Problems

SOUNDSCAPE_DIR = "train_soundscapes"
SOUNDSCAPE_LABELS_FILE = "train_soundscape_labels.csv"
SOUNDSCAPE_REQUIRED = ["row_id", "site", "audio_id", "seconds", "birds"]


def soundscape_files(root: Path, problems: Problems) -> dict[tuple[str, str], Path]:
    """The soundscape file of each (audio_id, site). Two files for one pair are ambiguous: both are
    skipped, named, rather than one chosen silently."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted((root / SOUNDSCAPE_DIR).glob("*.ogg")):
        parts = path.stem.split("_")
        if len(parts) < 2:
            problems.skip(str(path), None, "file name is not <audio_id>_<SITE>_<YYYYMMDD>.ogg")
            continue
        found.setdefault((parts[0], parts[1]), []).append(path)
    files = {}
    for (audio_id, site), paths in found.items():
        if len(paths) == 1:
            files[(audio_id, site)] = paths[0]
            continue
        for path in paths:
            problems.skip(str(path), None, f"{len(paths)} files match audio_id {audio_id} and site {site} "
                                           f"({', '.join(p.name for p in paths)}); keep one")
    return files


def parse_birds(cell: object) -> list[str]:
    """The codes of a soundscape `birds` cell ([] for nocall); MalformedLabels says why it is unusable."""
    if is_missing(cell):
        raise MalformedLabels("empty birds (expected species codes or nocall)")
    codes = [normalize_code(code) for code in str(cell).split() if code != NOCALL]
    bad = [code for code in codes if not is_code(code)]
    if bad:
        raise MalformedLabels(f"birds {shown(bad)} are not species codes ({CODE_RULE})")
    return codes


def soundscape_window(row, line: int, files: dict, durations: dict, root: Path, labels_name: str,
                      problems: Problems) -> dict | None:
    """One labelled window checked: its file, end second and bird codes, or None (recorded)."""
    try:
        seconds = parse_number(row.seconds)
    except ValueError:
        seconds = None
    if seconds is None:
        problems.skip(labels_name, line, f"seconds {shown(row.seconds)} is not a number")
        return None
    try:
        birds = parse_birds(row.birds)
    except MalformedLabels as err:
        problems.skip(labels_name, line, str(err))
        return None
    path = files.get((str(row.audio_id), str(row.site)))
    if path is None:
        problems.skip(labels_name, line,
                      f"no file {SOUNDSCAPE_DIR}/{row.audio_id}_{row.site}_*.ogg for row {shown(row.row_id)}")
        return None
    if path not in durations:
        durations[path] = audio_duration(path, root)
    duration, reason = durations[path]
    if reason is not None:
        problems.skip(str(path), line, reason)
        return None
    if not 0 < seconds <= duration + 1e-6:
        problems.skip(labels_name, line,
                      f"window ending at {row.seconds} s lies outside {path.name} ({duration:.1f} s)")
        return None
    return {"item_id": str(row.row_id), "path": path.relative_to(root).as_posix(),
            "window_end": seconds, "birds": birds, "line": line}


def read_soundscape_windows(root: Path, problems: Problems) -> list[dict]:
    """Usable labelled 5 s windows: item_id (row_id), path, window_end, birds ([] = nocall), line."""
    labels_path = root / SOUNDSCAPE_LABELS_FILE
    if not labels_path.exists():
        problems.warn(str(labels_path), None, "no soundscape labels: the soundscape evaluation is skipped")
        return []
    labels = read_table(labels_path, SOUNDSCAPE_REQUIRED, allow_empty=True)
    if labels.empty:  # a header alone labels nothing: treated as no labels file, with a warning
        problems.warn(str(labels_path), None, "a header and no rows: the soundscape evaluation is skipped")
        return []
    files = soundscape_files(root, problems)
    durations: dict[Path, tuple[float | None, str | None]] = {}
    windows, seen, placed = [], {}, {}
    for line, row in enumerate(labels.itertuples(index=False), start=2):
        if is_missing(row.row_id):
            problems.skip(str(labels_path), line, "empty row_id")
            continue
        if str(row.row_id) in seen:
            problems.skip(str(labels_path), line, f"duplicate: row_id {shown(row.row_id)} is already "
                                                   f"listed on row {seen[str(row.row_id)]}")
            continue
        seen[str(row.row_id)] = line
        window = soundscape_window(row, line, files, durations, root, str(labels_path), problems)
        if window is None:
            continue
        where = (window["path"], window["window_end"])
        if where in placed:  # one window under two row ids: scored twice, or with two answers
            first = placed[where]
            same = first["birds"] == window["birds"]
            problems.skip(str(labels_path), line, f"row_id {shown(row.row_id)} labels the window ending at "
                          f"{window['window_end']:g} s of {Path(window['path']).name}, already labelled on row "
                          f"{first['line']} with {'the same' if same else 'other'} birds")
            continue
        placed[where] = window
        windows.append(window)
    return windows

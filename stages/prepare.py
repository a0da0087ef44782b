"""Stage prepare: BirdCLEF-layout metadata -> chunk table, weak targets, class list, data report.

Reads only audio headers (durations); decoding belongs to featurize. The chunk table holds chunk
geometry and the split only, and the targets live in their own file, so a label-only change (say
`data.secondary_label_weight`) leaves chunks.csv byte-identical and DVC does not re-run featurize.

    python -m stages.prepare --params params.yaml --out data/prepared --report reports/data_report.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from stages.atomic import atomic_path, write_json
from stages.labels import NOCALL, MalformedLabels, normalize_code, parse_secondary_labels, split_known, weak_target
from stages.params import DataParams, load_params
from stages.problems import DatasetError, Problems

METADATA_FILE = "train_metadata.csv"
SHORT_AUDIO_DIR = "train_short_audio"
SOUNDSCAPE_DIR = "train_soundscapes"
SOUNDSCAPE_LABELS_FILE = "train_soundscape_labels.csv"
METADATA_REQUIRED = ["primary_label", "secondary_labels", "filename", "rating"]
SOUNDSCAPE_REQUIRED = ["row_id", "site", "audio_id", "seconds", "birds"]
SOUNDSCAPE_WINDOW_SECONDS = 5.0  # the competition scores 5 s windows
CHUNK_COLUMNS = ["chunk_id", "split", "path", "start_s", "audio_s", "target_row", "item_id"]
OGG_MAX_PAGE_BYTES = 27 + 255 + 255 * 255  # header, segment table, 255 segments of 255 bytes


def chunk_windows(duration: float, chunk: float, hop: float, min_remainder: float,
                  max_chunks: int) -> list[tuple[float, float]]:
    """(start, seconds of real audio) for each chunk of a recording.

    Full chunks every `hop` seconds, then the tail if it holds at least `min_remainder` seconds
    and reaches past the last full chunk (zero-padded later). Long recordings keep `max_chunks` chunks spread evenly over the whole recording, so the
    kept pieces are not all from its start.
    """
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


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path}: not found. Point data.root in params.yaml at a folder in the "
                           "BirdCLEF 2021 layout (see README, 'Reproduce on BirdCLEF 2021').")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path}: the file is empty; expected a CSV with columns {required}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not a readable CSV ({err})") from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    if table.empty:
        raise DatasetError(f"{path}: has a header but no rows")
    return table


def audio_duration(path: Path, root: Path) -> tuple[float | None, str | None]:
    """Duration from the file header, or the reason the file cannot be used."""
    if not path.resolve().is_relative_to(root.resolve()):
        return None, f"path points outside data.root ({root})"
    if not path.is_file():
        return None, "file not found"
    if path.stat().st_size == 0:
        return None, "file is empty"
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        return None, f"not a readable audio file ({err})"
    if info.frames <= 0 or info.samplerate <= 0:
        return None, "audio header reports no samples"
    if info.format == "OGG" and not ogg_ends_with_eos_page(path):
        return None, "truncated Ogg file (it does not end with an end-of-stream page)"
    return info.frames / info.samplerate, None


def ogg_ends_with_eos_page(path: Path) -> bool:
    """True when the file ends with a whole Ogg page flagged end-of-stream.

    libsndfile reads a truncated Ogg file (say, an interrupted download) without complaint, as a
    shorter recording; the missing end-of-stream page at its end is what gives it away.
    """
    with path.open("rb") as file:
        size = file.seek(0, 2)
        file.seek(max(0, size - OGG_MAX_PAGE_BYTES))
        tail = file.read()
    position = tail.rfind(b"OggS")
    while position >= 0:  # "OggS" can also occur inside packet data: keep the page ending at EOF
        header = tail[position:position + 27]
        if len(header) == 27:
            segments = tail[position + 27:position + 27 + header[26]]
            if (len(segments) == header[26]
                    and position + 27 + len(segments) + sum(segments) == len(tail)):
                return bool(header[5] & 0x04)
        position = tail.rfind(b"OggS", 0, position)
    return False


def read_recordings(root: Path, p: DataParams, problems: Problems) -> pd.DataFrame:
    """Metadata rows that point at usable audio, with parsed labels and durations."""
    metadata = read_table(root / METADATA_FILE, METADATA_REQUIRED)
    metadata_name = str(root / METADATA_FILE)
    records = []
    n_below_rating = 0
    for line, row in tqdm(enumerate(metadata.itertuples(index=False), start=2), total=len(metadata),
                          desc="prepare: reading headers", unit="file"):
        try:
            rating = float(row.rating)
        except (TypeError, ValueError):
            problems.skip(metadata_name, line, f"rating {row.rating!r} is not a number")
            continue
        if rating < p.min_rating:
            n_below_rating += 1
            continue
        primary = normalize_code(str(row.primary_label)) if isinstance(row.primary_label, str) else ""
        if not primary:
            problems.skip(metadata_name, line, "empty primary_label")
            continue
        try:
            secondaries = parse_secondary_labels(row.secondary_labels)
        except MalformedLabels as err:
            problems.skip(metadata_name, line, f"malformed secondary_labels: {err}")
            continue
        relative = Path(SHORT_AUDIO_DIR) / primary / str(row.filename)
        duration, reason = audio_duration(root / relative, root)
        if reason is not None:
            problems.skip(str(root / relative), line, reason)
            continue
        if duration < p.min_remainder_seconds:
            problems.skip(str(root / relative), line,
                          f"recording is {duration:.2f} s, shorter than data.min_remainder_seconds "
                          f"({p.min_remainder_seconds} s)")
            continue
        records.append({"item_id": Path(str(row.filename)).stem, "path": relative.as_posix(),
                        "duration": duration, "primary_label": primary,
                        "raw_secondary": secondaries, "line": line})
    if not records:
        raise DatasetError(f"{metadata_name}: no usable recordings (see skipped files in the report)")
    recordings = pd.DataFrame(records)
    recordings.attrs["n_below_rating"] = n_below_rating
    return recordings


def split_by_recording(primary_labels: pd.Series, valid_fraction: float, seed: int) -> np.ndarray:
    """'train'/'valid' per recording, stratified by primary label; no recording is in both."""
    rng = np.random.default_rng(seed)
    split = np.full(len(primary_labels), "train", dtype=object)
    for _, positions in sorted(primary_labels.groupby(primary_labels).indices.items()):
        if len(positions) < 2:
            continue  # a single recording can only teach; it goes to train
        n_valid = int(np.clip(round(len(positions) * valid_fraction), 1, len(positions) - 1))
        split[rng.permutation(positions)[:n_valid]] = "valid"
    return split


def read_soundscape_windows(root: Path, p: DataParams, problems: Problems) -> pd.DataFrame:
    """One row per labelled 5 s soundscape window, with the file it comes from."""
    labels_path = root / SOUNDSCAPE_LABELS_FILE
    if not labels_path.exists():
        problems.warn(str(labels_path), None, "no soundscape labels: the soundscape evaluation is skipped")
        return pd.DataFrame(columns=["item_id", "path", "window_end", "birds"])
    labels = read_table(labels_path, SOUNDSCAPE_REQUIRED)
    files = {}
    for path in sorted((root / SOUNDSCAPE_DIR).glob("*.ogg")):
        parts = path.stem.split("_")
        if len(parts) < 2:
            problems.skip(str(path), None, "file name is not <audio_id>_<SITE>_<YYYYMMDD>.ogg")
            continue
        audio_id, site = parts[:2]
        files[(audio_id, site)] = path
    durations: dict[Path, tuple[float | None, str | None]] = {}
    windows = []
    for line, row in enumerate(labels.itertuples(index=False), start=2):
        path = files.get((str(row.audio_id), str(row.site)))
        if path is None:
            problems.skip(str(labels_path), line,
                          f"no file {SOUNDSCAPE_DIR}/{row.audio_id}_{row.site}_*.ogg for row {row.row_id}")
            continue
        if path not in durations:
            durations[path] = audio_duration(path, root)
        duration, reason = durations[path]
        if reason is not None:
            problems.skip(str(path), line, reason)
            continue
        if not 0 < float(row.seconds) <= duration + 1e-6:
            problems.skip(str(labels_path), line,
                          f"window ending at {row.seconds} s lies outside {path.name} ({duration:.1f} s)")
            continue
        windows.append({"item_id": str(row.row_id), "path": path.relative_to(root).as_posix(),
                        "window_end": float(row.seconds), "birds": str(row.birds)})
    return pd.DataFrame(windows)


def soundscape_chunk(window_end: float, chunk_seconds: float) -> tuple[float, float]:
    # A chunk as long as the training chunks, centred on the competition's 5 s window.
    centre = window_end - SOUNDSCAPE_WINDOW_SECONDS / 2
    start = max(0.0, centre - chunk_seconds / 2)
    return round(start, 6), chunk_seconds


def build_tables(root: Path, p: DataParams, seed: int, problems: Problems):
    recordings = read_recordings(root, p, problems)
    classes = sorted(recordings["primary_label"].unique())
    class_index = {code: i for i, code in enumerate(classes)}
    recordings["split"] = split_by_recording(recordings["primary_label"], p.valid_fraction, seed)

    label_rows, targets, chunks = [], [], []
    dropped_secondary: dict[str, int] = {}
    for rec in recordings.itertuples(index=False):
        secondaries, dropped = split_known([c for c in rec.raw_secondary if c != rec.primary_label],
                                           set(classes))
        for code in dropped:
            dropped_secondary[code] = dropped_secondary.get(code, 0) + 1
        target_row = len(label_rows)
        label_rows.append({"target_row": target_row, "item_id": rec.item_id, "split": rec.split,
                           "primary_label": rec.primary_label,
                           "secondary_labels": " ".join(secondaries), "birds": ""})
        targets.append(weak_target([rec.primary_label], secondaries, class_index, p.secondary_label_weight))
        for start, audio_s in chunk_windows(rec.duration, p.chunk_seconds, p.hop_seconds,
                                            p.min_remainder_seconds, p.max_chunks_per_recording):
            chunks.append({"split": rec.split, "path": rec.path, "start_s": start, "audio_s": audio_s,
                           "target_row": target_row, "item_id": rec.item_id})

    windows = read_soundscape_windows(root, p, problems)
    for window in windows.itertuples(index=False):
        birds = [normalize_code(code) for code in window.birds.split() if code != NOCALL]
        known, dropped = split_known(birds, set(classes))
        for code in dropped:
            dropped_secondary[code] = dropped_secondary.get(code, 0) + 1
        target_row = len(label_rows)
        label_rows.append({"target_row": target_row, "item_id": window.item_id, "split": "soundscape",
                           "primary_label": "", "secondary_labels": "",
                           "birds": " ".join(known) or NOCALL})
        targets.append(weak_target(known, [], class_index, 1.0))
        start, audio_s = soundscape_chunk(window.window_end, p.chunk_seconds)
        chunks.append({"split": "soundscape", "path": window.path, "start_s": start, "audio_s": audio_s,
                       "target_row": target_row, "item_id": window.item_id})

    chunk_table = pd.DataFrame(chunks)
    chunk_table.insert(0, "chunk_id", np.arange(len(chunk_table)))
    report = {
        "data_root": str(root),
        "classes": len(classes),
        "recordings": recordings["split"].value_counts().sort_index().to_dict(),
        "soundscape_windows": len(windows),
        "soundscape_nocall_windows": int((windows["birds"] == NOCALL).sum()) if len(windows) else 0,
        "chunks": chunk_table["split"].value_counts().sort_index().to_dict(),
        "recordings_below_min_rating": int(recordings.attrs["n_below_rating"]),
        "recordings_with_secondary_labels": int(sum(bool(row["secondary_labels"]) for row in label_rows)),
        "unknown_codes_dropped": dict(sorted(dropped_secondary.items())),
        "skipped": problems.skipped,
        "warnings": problems.warnings,
    }
    return chunk_table[CHUNK_COLUMNS], np.stack(targets), pd.DataFrame(label_rows), classes, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    p = params.data
    problems = Problems(strict=p.strict)
    chunks, targets, labels, classes, report = build_tables(Path(p.root), p, params.seed, problems)

    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        chunks.to_csv(tmp / "chunks.csv", index=False)
        np.save(tmp / "targets.npy", targets)
        labels.to_csv(tmp / "labels.csv", index=False)
        (tmp / "classes.txt").write_text("\n".join(classes) + "\n")
    write_json(args.report, report)
    print(f"prepare: {len(classes)} classes, chunks per split {report['chunks']}, "
          f"{len(problems.skipped)} skipped (see {args.report})")


if __name__ == "__main__":
    main()

"""BirdCLEF-layout metadata -> the tables stage prepare writes: chunks, weak targets, labels, classes.

The chunk table holds chunk geometry and the split only, and the targets live in their own array, so
a label-only change (say `data.secondary_label_weight`) leaves chunks.csv byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stages.birdclef.chunks import chunk_windows, soundscape_chunk
from stages.birdclef.labels import NOCALL, split_known, weak_target
from stages.birdclef.metadata import METADATA_FILE, read_recordings
from stages.birdclef.soundscapes import SOUNDSCAPE_LABELS_FILE, read_soundscape_windows
from stages.core.atomic import atomic_path, write_json
from stages.core.params import DataParams, Params
from stages.core.problems import DatasetError, Problems

CHUNK_COLUMNS = ["chunk_id", "split", "path", "start_s", "audio_s", "target_row", "item_id"]


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


def check_valid_split(recordings: pd.DataFrame, valid_fraction: float, metadata: Path) -> None:
    """Stop here, not after a training epoch, when no recording can validate."""
    if (recordings["split"] == "valid").any():
        return
    species = sorted(recordings["primary_label"].unique())
    shown = ", ".join(species[:10]) + (f" and {len(species) - 10} more" if len(species) > 10 else "")
    raise DatasetError(f"{metadata}: no recording can go to the valid split (data.valid_fraction: "
                       f"{valid_fraction}): every species has a single usable recording ({shown}), and a species "
                       "needs 2 or more, one to train on and one to validate. Add recordings, or see the skipped "
                       "ones in the report.")


class Tables:
    """The rows of labels.csv, targets.npy and chunks.csv, built together."""

    def __init__(self, classes: list[str]):
        self.classes = classes
        self.class_index = {code: i for i, code in enumerate(classes)}
        self.label_rows: list[dict] = []
        self.targets: list[np.ndarray] = []
        self.chunks: list[dict] = []
        self.dropped: dict[str, int] = {}  # unknown codes left out of written labels, with counts

    def known(self, codes: list[str]) -> tuple[list[str], list[str]]:
        kept, dropped = split_known(codes, self.class_index.keys())
        for code in dropped:
            self.dropped[code] = self.dropped.get(code, 0) + 1
        return kept, dropped

    def add_label(self, row: dict, target: np.ndarray) -> int:
        target_row = len(self.label_rows)
        self.label_rows.append({"target_row": target_row, **row})
        self.targets.append(target)
        return target_row


def add_recordings(tables: Tables, recordings: pd.DataFrame, p: DataParams) -> None:
    for rec in recordings.itertuples(index=False):
        secondaries, _ = tables.known([c for c in rec.raw_secondary if c != rec.primary_label])
        target_row = tables.add_label(
            {"item_id": rec.item_id, "split": rec.split, "primary_label": rec.primary_label,
             "secondary_labels": " ".join(secondaries), "birds": ""},
            weak_target([rec.primary_label], secondaries, tables.class_index, p.secondary_label_weight))
        for start, audio_s in chunk_windows(rec.duration, p.chunk_seconds, p.hop_seconds,
                                            p.min_remainder_seconds, p.max_chunks_per_recording):
            tables.chunks.append({"split": rec.split, "path": rec.path, "start_s": start,
                                  "audio_s": audio_s, "target_row": target_row, "item_id": rec.item_id})


def add_soundscapes(tables: Tables, windows: list[dict], p: DataParams, labels_name: str,
                    problems: Problems) -> int:
    """Soundscape windows labelled with the birds that are classes; returns how many windows lost
    a bird that is not a class. Such a window is written without it and listed under `warnings`
    (the model cannot name it anyway); a window whose birds are all unknown is skipped, as labelling
    it `nocall` would be wrong."""
    n_with_unknown = 0
    for window in windows:
        unknown = list(dict.fromkeys(code for code in window["birds"] if code not in tables.class_index))
        if unknown and not set(window["birds"]) - set(unknown):
            problems.skip(labels_name, window["line"], f"birds {unknown} are not classes (no usable "
                          "training recording): the window cannot be labelled, and nocall would be wrong")
            continue
        if unknown:
            n_with_unknown += 1
            problems.warn(labels_name, window["line"], f"birds {unknown} are not classes (no usable "
                          "training recording): left out of the window's label")
        known, _ = tables.known(window["birds"])
        target_row = tables.add_label(
            {"item_id": window["item_id"], "split": "soundscape", "primary_label": "",
             "secondary_labels": "", "birds": " ".join(known) or NOCALL},
            weak_target(known, [], tables.class_index, 1.0))
        start, audio_s = soundscape_chunk(window["window_end"], p.chunk_seconds)
        tables.chunks.append({"split": "soundscape", "path": window["path"], "start_s": start,
                              "audio_s": audio_s, "target_row": target_row, "item_id": window["item_id"]})
    return n_with_unknown


@dataclass(frozen=True)
class PreparedTables:
    """What stage prepare writes to data/prepared/, and its data report."""
    chunks: pd.DataFrame     # CHUNK_COLUMNS, one row per chunk
    targets: np.ndarray      # [labels, classes] float32 weak targets, row `target_row` of a chunk
    labels: pd.DataFrame     # one row per recording or soundscape window
    classes: list[str]       # sorted species codes
    report: dict             # reports/data_report.json

    def write(self, out: Path) -> None:
        """chunks.csv, targets.npy, labels.csv and classes.txt, all or none (out is replaced whole)."""
        with atomic_path(out) as tmp:
            tmp.mkdir()
            self.chunks.to_csv(tmp / "chunks.csv", index=False)
            np.save(tmp / "targets.npy", self.targets)
            self.labels.to_csv(tmp / "labels.csv", index=False)
            (tmp / "classes.txt").write_text("\n".join(self.classes) + "\n")


def build_tables(root: Path, p: DataParams, seed: int, problems: Problems) -> PreparedTables:
    recordings = read_recordings(root, p, problems)
    classes = sorted(recordings["primary_label"].unique())
    recordings["split"] = split_by_recording(recordings["primary_label"], p.valid_fraction, seed)
    check_valid_split(recordings, p.valid_fraction, root / METADATA_FILE)
    tables = Tables(classes)
    add_recordings(tables, recordings, p)
    windows = read_soundscape_windows(root, problems)
    n_with_unknown = add_soundscapes(tables, windows, p, str(root / SOUNDSCAPE_LABELS_FILE), problems)

    chunk_table = pd.DataFrame(tables.chunks)
    chunk_table.insert(0, "chunk_id", np.arange(len(chunk_table)))
    labels = pd.DataFrame(tables.label_rows)
    scape_birds = labels.loc[labels["split"] == "soundscape", "birds"]
    report = {
        "data_root": str(root),
        "classes": len(classes),
        "recordings": recordings["split"].value_counts().sort_index().to_dict(),
        "soundscape_windows": len(scape_birds),
        "soundscape_nocall_windows": int((scape_birds == NOCALL).sum()),
        "soundscape_windows_with_unknown_birds": n_with_unknown,
        "chunks": chunk_table["split"].value_counts().sort_index().to_dict(),
        "recordings_below_min_rating": int(recordings.attrs["n_below_rating"]),
        "recordings_with_secondary_labels": int(sum(bool(row["secondary_labels"]) for row in tables.label_rows)),
        "unknown_codes_dropped": dict(sorted(tables.dropped.items())),
        "skipped": problems.skipped,
        "warnings": problems.warnings,
    }
    return PreparedTables(chunk_table[CHUNK_COLUMNS], np.stack(tables.targets), labels, classes, report)


def prepare(params: Params, out: Path, report_path: Path) -> PreparedTables:
    """Stage prepare: the tables of the dataset at `data.root` written to `out`, the data report to
    `report_path`. Bad rows and files are skipped with a reason, or stop the stage with data.strict."""
    problems = Problems(strict=params.data.strict)
    try:
        tables = build_tables(Path(params.data.root), params.data, params.seed, problems)
    except DatasetError as err:
        if problems.strict:  # stopped at the one file or row the message names; the last report stays
            raise
        # The report of what was skipped on the way is what the message points to: write it first.
        write_json(report_path, {"data_root": params.data.root, "error": str(err), "skipped": problems.skipped,
                                 "warnings": problems.warnings})
        raise DatasetError(f"{err} (data report: {report_path})") from None
    tables.write(out)
    write_json(report_path, tables.report)
    return tables

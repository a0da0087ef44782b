"""Stage prepare: BirdCLEF-layout metadata -> chunk table, weak targets, class list, data report.

Reads only audio headers (durations); decoding belongs to featurize. The chunk table holds chunk
geometry and the split only, and the targets live in their own file, so a label-only change (say
`data.secondary_label_weight`) leaves chunks.csv byte-identical and DVC does not re-run featurize.

    python -m stages.prepare --params params.yaml --out data/prepared --report reports/data_report.json
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from stages.atomic import atomic_path, write_json
from stages.labels import NOCALL, split_known, weak_target
from stages.metadata import SOUNDSCAPE_LABELS_FILE, read_recordings, read_soundscape_windows
from stages.params import DataParams, load_params
from stages.problems import Problems

SOUNDSCAPE_WINDOW_SECONDS = 5.0  # the competition scores 5 s windows
CHUNK_COLUMNS = ["chunk_id", "split", "path", "start_s", "audio_s", "target_row", "item_id"]
EPSILON = 1e-9  # seconds: a chunk that ends this close past the recording's end still counts as full
# Chunk i starts at the float sum of i hops (hop_sum), as it always did, so chunk tables stay
# byte-identical. From about 2**52 hops on such a sum stalls (the old loop never ended there):
# recordings longer than RUNNING_SUM_HOPS hops (5.6e15 s at a 5 s hop) put chunk i at i * hop.
RUNNING_SUM_HOPS = 2**50


def chunk_windows(duration: float, chunk: float, hop: float, min_remainder: float,
                  max_chunks: int) -> list[tuple[float, float]]:
    """(start, seconds of real audio) for each chunk of a recording.

    Full chunks every `hop` seconds, then the tail if it holds at least `min_remainder` seconds
    and reaches past the last full chunk (zero-padded later). Long recordings keep `max_chunks`
    chunks spread evenly over the whole recording, so the kept pieces are not all from its start.
    The cost is O(max_chunks) whatever the duration (a header may claim 10^9 s): the chunks are
    counted, and only the kept ones are built. ValueError for a duration that is not finite.
    """
    if not math.isfinite(duration):
        raise ValueError(f"duration must be a finite number of seconds, got {duration!r}")
    running = duration / hop < RUNNING_SUM_HOPS

    def start(i: int) -> float:
        if running:
            return hop_sum(i, hop)
        try:
            return i * hop
        except OverflowError:  # i beyond floats: past any duration
            return math.inf

    n_full = full_chunk_count(start, duration, chunk, hop)
    tail = duration - start(n_full)
    covered_until = start(n_full - 1) + chunk if n_full else 0.0
    # tail < chunk always holds, except at absurd durations where a chunk is below the float spacing.
    has_tail = min_remainder <= tail < chunk and duration > covered_until + EPSILON
    total = n_full + int(has_tail)
    if total > max_chunks:
        spread = (np.linspace(0, total - 1, max_chunks) if total < 2**53  # as always
                  else np.linspace(0.0, 1.0, max_chunks) * float(total - 1))  # no float overflow
        indices = [int(i) for i in spread.round()]
    else:
        indices = range(total)
    return [(round(start(i), 6), round(chunk if i < n_full else tail, 6)) for i in indices]


def full_chunk_count(start, duration: float, chunk: float, hop: float) -> int:
    """How many i >= 0 have start(i) + chunk <= duration + EPSILON, for a non-decreasing start():
    a guess by division, then a bisection, so O(log) calls whatever the count."""
    def fits(i: int) -> bool:
        return start(i) + chunk <= duration + EPSILON

    if not fits(0):
        return 0
    quotient = (duration + EPSILON - chunk) / hop
    guess = int(quotient) if math.isfinite(quotient) else int(sys.float_info.max)
    low = guess if fits(guess) else 0  # fits(low)
    high = guess + 1
    while fits(high):
        low, high = high, 2 * high
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low + 1


def hop_sum(i: int, hop: float) -> float:
    """0.0 + hop + hop + ... (i additions) in floats: where the loop this replaced put chunk i.

    Made in O(log i) steps. Between two powers of two every float is a multiple of one spacing,
    and once an addition has started and ended there, each further one adds the same amount
    (round-to-nearest-even sees the same remainder; after a tie the sum is even), so those
    additions are counted, not made. Exact for i < RUNNING_SUM_HOPS (the sum cannot stall there).
    """
    numerator, _ = hop.as_integer_ratio()
    if i * numerator < 2**53:
        return i * hop  # every partial sum is a float exactly, and so is the product
    total = 0.0
    while i > 0:
        before, total, i = total, total + hop, i - 1
        if i == 0 or before == 0.0 or math.frexp(before)[1] != math.frexp(total)[1]:
            continue  # this addition crossed a power of two
        step = (total + hop) - total
        if step == 0.0:
            return total  # hop is below half the float spacing: the sum has stalled
        top = 2.0 ** math.frexp(total)[1]  # the next power of two
        room = math.ceil((top - total) / step) - 1  # additions of `step` that stay below top
        jump = min(i, room)
        total, i = total + jump * step, i - jump
    return total


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


def soundscape_chunk(window_end: float, chunk_seconds: float) -> tuple[float, float]:
    # A chunk as long as the training chunks, centred on the competition's 5 s window.
    centre = window_end - SOUNDSCAPE_WINDOW_SECONDS / 2
    start = max(0.0, centre - chunk_seconds / 2)
    return round(start, 6), chunk_seconds


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


def build_tables(root: Path, p: DataParams, seed: int, problems: Problems):
    recordings = read_recordings(root, p, problems)
    classes = sorted(recordings["primary_label"].unique())
    recordings["split"] = split_by_recording(recordings["primary_label"], p.valid_fraction, seed)
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
    return chunk_table[CHUNK_COLUMNS], np.stack(tables.targets), labels, classes, report


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

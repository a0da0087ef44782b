"""Stage background: the folder of `train.background` (bird-free audio) -> log-mel chunks for mixing.

Every audio file under the folder is cut into consecutive chunks of `data.chunk_seconds` (a tail of
at least `data.min_remainder_seconds` zero-padded, as prepare does) and featurized exactly as the
training chunks are (stages/audio/features.py: same decoding, checks and front end), into its own
`features.npy` beside `index.csv` (which rows decoded) and `chunks.csv` (where each row comes from).
The folder must not hold, or lie inside, the evaluation soundscapes: noise cut from them would put
the scored windows into training.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from stages.audio.features import featurize
from stages.audio.files import find_audio
from stages.birdclef.chunks import chunk_windows
from stages.birdclef.metadata import audio_duration
from stages.core.atomic import atomic_path, write_json
from stages.core.params import Params, ParamsError
from stages.core.problems import DatasetError, Problems

EVALUATION_FOLDERS = ("train_soundscapes", "test_soundscapes")  # under data.root


def check_not_evaluation_audio(folder: Path, data_root: Path) -> None:
    """ParamsError when `folder` is, holds or lies inside data.root's soundscapes (or data.root itself)."""
    resolved = folder.resolve()
    for name in EVALUATION_FOLDERS:
        scored = (data_root / name).resolve()
        if resolved == scored or resolved.is_relative_to(scored) or scored.is_relative_to(resolved):
            raise ParamsError(f"train.background: {folder} {'holds' if scored.is_relative_to(resolved) else 'is'} "
                              f"the evaluation soundscapes ({data_root / name}): noise cut from them would train on "
                              "the windows that are scored. Point it at a folder of bird-free clips only.")


def noise_chunks(folder: Path, params: Params, problems: Problems) -> pd.DataFrame:
    """The chunk table of every audio file under `folder` (paths relative to it), in sorted order."""
    data = params.data
    rows = []
    for path in find_audio(folder):
        relative = path.relative_to(folder).as_posix()
        duration, reason = audio_duration(path, folder)
        if duration is None:
            problems.skip(str(path), None, reason)
            continue
        spans = chunk_windows(duration, data.chunk_seconds, data.chunk_seconds, data.min_remainder_seconds,
                              sys.maxsize)
        if not spans:
            problems.skip(str(path), None, f"{duration:.2f} s is shorter than data.min_remainder_seconds")
        rows += [{"path": relative, "start_s": start, "audio_s": seconds} for start, seconds in spans]
    chunks = pd.DataFrame(rows, columns=["path", "start_s", "audio_s"])
    chunks.insert(0, "chunk_id", range(len(chunks)))
    chunks["split"] = "train"  # featurize's statistics then cover every chunk (they are not used)
    return chunks


def write_noise_features(params: Params, out: Path, report_path: Path) -> dict:
    """The features of `train.background` in `out` (replaced whole, or left as it was on failure)."""
    folder = Path(params.train.background)
    if not folder.is_dir():
        raise ParamsError(f"train.background: {folder} is not a folder; point it at a folder of bird-free audio "
                          "(the demo writes data/demo/background)")
    check_not_evaluation_audio(folder, Path(params.data.root))
    problems = Problems(strict=params.data.strict)
    chunks = noise_chunks(folder, params, problems)
    if chunks.empty:
        write_json(report_path, {"folder": str(folder), "files": 0, "chunks": 0, "skipped": problems.skipped})
        raise DatasetError(f"train.background: no usable audio in {folder} (see {report_path}); add bird-free "
                           "clips there (any of .ogg .wav .flac ...)")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        report = featurize(chunks, folder, params.data, params.features, tmp, problems)
        chunks.drop(columns="split").to_csv(tmp / "chunks.csv", index=False)
    report = {"folder": str(folder), **report}
    write_json(report_path, report)
    return report

"""Stage predict@<model>, and the command for new audio: score every 5-second window of a folder of
recordings with one or more model bundles (probabilities averaged) and write a submission.

    python -m stages.predict --model models/efficientnet_b0 --audio path/to/recordings --out submission.csv
    python -m stages.predict --model models/efficientnet_b0 --model models/ast_tiny --backend onnx \
        --audio test_soundscapes --out submission.csv

Files named like BirdCLEF soundscapes (`<audio_id>_<SITE>_<date>.ogg`) give the competition's
`row_id,birds`; any other audio one row per window with file, start, end, birds and the top-k scores
(stages/inference/submission.py). The windows, the tail rule and the memory bound:
stages/inference/windows.py and stages/inference/run.py; the bundle: stages/inference/bundle.py.
`--backend onnx` runs on ONNX Runtime and numpy alone, without torch or timm
(stages/inference/backends.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.atomic import atomic_path, write_json
from stages.core.cli import run
from stages.core.threads import cpu_threads
from stages.inference.backends import BACKENDS, load_backend
from stages.inference.bundle import WINDOW_SECONDS, BundleError, read_bundle
from stages.inference.run import PredictError, Predictor, predict_files
from stages.inference.submission import COMPETITION_COLUMNS, competition_table, table_format, windows_table
from stages.audio.files import AUDIO_SUFFIXES, find_audio


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="a bundle folder (models/<model>); repeat to average several models")
    parser.add_argument("--audio", type=Path, required=True, help="a folder of audio (searched recursively) or a file")
    parser.add_argument("--out", type=Path, required=True, help="the submission CSV")
    parser.add_argument("--report", type=Path, help="also write a JSON report: files, skips, windows/s")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch, or onnx (ONNX Runtime and numpy, no torch; needs model.onnx from stages.export)")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    parser.add_argument("--threads", default="auto", help="CPU threads: a number, or auto (OMP_NUM_THREADS, else all)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="torch backend only")
    parser.add_argument("--top-k", type=int, default=3, help="best classes listed per window (not soundscapes)")
    parser.add_argument("--scores", action="store_true", help="add every class's probability (not soundscapes)")
    parser.add_argument("--threshold", type=float, help="call threshold (default: the bundle's tuned one; "
                        "several bundles: the mean of theirs)")
    parser.add_argument("--strict", action="store_true", help="stop at the first unusable file instead of skipping")
    parser.add_argument("--allow-empty", action="store_true",
                        help="no audio found: write a header-only submission instead of failing (the DVC stage)")
    args = parser.parse_args()
    if args.batch_size < 1 or args.top_k < 1:
        parser.error("--batch-size and --top-k must be at least 1")
    if args.threshold is not None and not 0 < args.threshold < 1:
        parser.error("--threshold must lie strictly between 0 and 1")
    if args.threads != "auto" and not (args.threads.isdigit() and int(args.threads) >= 1):
        parser.error("--threads must be auto or a number >= 1")
    return args


def main() -> None:
    args = parse_args()
    bundles = [read_bundle(folder) for folder in args.model]
    threads = cpu_threads(args.threads)
    threshold = args.threshold
    if threshold is None:
        threshold = sum(b.card.threshold.value for b in bundles) / len(bundles)
    paths = find_audio(args.audio) if args.audio.exists() else []
    audio = bundles[0].card.audio
    windows = (f"consecutive {WINDOW_SECONDS:g} s windows from each file's start; a tail of at least "
               f"{audio.min_remainder_seconds:g} s is zero-padded to a window, a shorter one dropped")
    report = {"models": [str(b.folder) for b in bundles], "backend": args.backend, "threads": threads,
              "device": args.device if args.backend == "torch" else "cpu", "threshold": threshold,
              "windows_rule": windows, "audio": str(args.audio), "files_found": len(paths)}
    if not paths:
        no_audio = (f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in {args.audio}" if args.audio.exists()
                    else f"{args.audio} does not exist")
        if not args.allow_empty:
            raise PredictError(f"{no_audio}. Point --audio at a folder of recordings.")
        print(f"predict: {no_audio}: writing an empty submission (the header alone) to {args.out}", flush=True)
        with atomic_path(args.out) as tmp:
            tmp.write_text(",".join(COMPETITION_COLUMNS) + "\n")
        _write_report(args.report, {**report, "format": "competition", "files_scored": 0, "windows": 0,
                                    "skipped": [], "seconds": 0.0, "windows_per_second": None})
        return

    backend = load_backend(args.backend, threads, args.device, args.batch_size)
    predictor = Predictor(bundles, backend, args.batch_size)
    root = args.audio.parent if args.audio.is_file() else args.audio
    result = predict_files(paths, root, predictor, args.strict)
    if not result.files:
        raise PredictError(f"none of the {len(paths)} audio files in {args.audio} could be used (reasons above); "
                           "no submission written")
    layout = table_format(paths)
    if layout == "competition":
        table = competition_table(result.files, predictor.classes, threshold)
    else:
        table = windows_table(result.files, args.audio, predictor.classes, threshold, args.top_k, args.scores)
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    speed = result.n_windows / max(result.seconds, 1e-9)
    _write_report(args.report, {**report, "format": layout, "files_scored": len(result.files),
                                "windows": result.n_windows, "skipped": result.skipped,
                                "seconds": round(result.seconds, 3), "windows_per_second": round(speed, 2)})
    print(f"predict: {len(result.files)} files, {result.n_windows} windows in {result.seconds:.1f} s "
          f"({speed:.1f} windows/s, {args.backend}, {threads} threads), threshold {threshold:g} -> {args.out}"
          + (f"; {len(result.skipped)} files skipped" if result.skipped else ""), flush=True)


def _write_report(path: Path | None, report: dict) -> None:
    if path is not None:
        write_json(path, report)


if __name__ == "__main__":
    run(main, BundleError, PredictError)

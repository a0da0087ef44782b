"""Stage featurize: every chunk of the chunk table -> a float16 log-mel array on disk.

Each recording is decoded once, as far as its last chunk, in bounded memory; unusable files are
skipped (or stop the stage with data.strict); normalisation statistics come from the train split
only. How: stages/audio/features.py.

    python -m stages.featurize --params params.yaml --chunks data/prepared/chunks.csv --out data/features \
        --report reports/featurize_report.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.audio.stream import AudioError
from stages.audio.features import write_features
from stages.audio.store import DiskSpaceError
from stages.core.cli import run
from stages.core.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--chunks", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    report = write_features(params, args.chunks, args.out, args.report)
    print(f"featurize: {report['chunks_valid']}/{report['chunks']} chunks, "
          f"{report['audio_seconds_per_second']} audio s per s, peak RSS {report['peak_rss_mib_main']} MiB")


if __name__ == "__main__":
    run(main, AudioError, DiskSpaceError)

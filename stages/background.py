"""Stage background: the bird-free audio of `train.background` -> log-mel chunks to mix into training.

Featurized exactly as the training chunks are; never the evaluation soundscapes. How:
stages/training/noise_folder.py; the mixing: stages/training/noise.py.

    python -m stages.background --params params.yaml --out data/background --report reports/background_report.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.audio.store import DiskSpaceError
from stages.audio.stream import AudioError
from stages.core.cli import run
from stages.core.params import load_params
from stages.training.noise_folder import write_noise_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    report = write_noise_features(params, args.out, args.report)
    print(f"background: {report['chunks_valid']}/{report['chunks']} chunks of {report['files']} files in "
          f"{report['folder']}, {len(report['skipped'])} skipped (see {args.report})")


if __name__ == "__main__":
    run(main, AudioError, DiskSpaceError)

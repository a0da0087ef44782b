"""Stage prepare: BirdCLEF-layout metadata -> chunk table, weak targets, class list, data report.

Reads only audio headers (durations); decoding belongs to featurize. The chunk table holds chunk
geometry and the split only, and the targets live in their own file, so a label-only change (say
`data.secondary_label_weight`) leaves chunks.csv byte-identical and DVC does not re-run featurize.

    python -m stages.prepare --params params.yaml --out data/prepared --report reports/data_report.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.birdclef.tables import prepare
from stages.core.cli import run
from stages.core.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    tables = prepare(params, args.out, args.report)
    print(f"prepare: {len(tables.classes)} classes, chunks per split {tables.report['chunks']}, "
          f"{len(tables.report['skipped'])} skipped (see {args.report})")


if __name__ == "__main__":
    run(main)

"""Stage spectrograms: one example log-mel chunk per species, as the models see them.

So a reader can check that species differ and that features look like bird calls rather than noise
or silence (how: stages/reporting/examples.py).

    python -m stages.spectrograms --params params.yaml --prepared data/prepared --features data/features \
        --out reports/spectrograms.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.cli import run
from stages.core.params import load_params
from stages.reporting.examples import plot_species_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    n_species = plot_species_examples(args.prepared, args.features, params.data.sample_rate, params.features,
                                      args.out)
    print(f"spectrograms: {n_species} species -> {args.out}")


if __name__ == "__main__":
    run(main)

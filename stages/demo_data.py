"""Stage demo_data: a synthetic dataset in the exact BirdCLEF 2021 layout, the pipeline's default input.

`demo.n_species` species with calls of their own over field noise, weak labels like the real data,
soundscapes with `nocall` windows; the same seed gives the same bytes. How: stages/demo/dataset.py.

    python -m stages.demo_data --params params.yaml --out data/demo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.cli import run
from stages.core.params import load_params
from stages.demo.dataset import write_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    write_demo(params.demo, params.seed, args.out)
    print(f"demo dataset written to {args.out}")


if __name__ == "__main__":
    run(main)

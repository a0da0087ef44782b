"""Benchmark: featurize throughput and peak memory at 1x and 4x the demo dataset size.

Peak RSS should stay flat as the dataset grows (features stream into a memory map). Prints one row
per scale; run from the project root:

    python tests/benchmarks/featurize_scaling.py [--scales 1 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_stage(module: str, params: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, "--params", str(params), *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(scale: int, workdir: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"]["recordings_per_species"] *= scale
    params["demo"]["n_soundscapes"] *= scale
    params["data"]["root"] = str(workdir / "demo")
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    run_stage("stages.demo_data", params_path, "--out", str(workdir / "demo"))
    run_stage("stages.prepare", params_path, "--out", str(workdir / "prepared"),
              "--report", str(workdir / "data_report.json"))
    run_stage("stages.featurize", params_path, "--chunks", str(workdir / "prepared" / "chunks.csv"),
              "--out", str(workdir / "features"), "--report", str(workdir / "featurize_report.json"))
    return json.loads((workdir / "featurize_report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    print("scale  files  chunks  audio_s  wall_s  audio_s_per_s  peak_rss_main_MiB  peak_rss_worker_MiB")
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(scale, Path(tmp))
        print(f"{scale:>5}  {r['files']:>5}  {r['chunks']:>6}  {r['audio_seconds']:>7.0f}  {r['wall_seconds']:>6.1f}"
              f"  {r['audio_seconds_per_second']:>13.1f}  {r['peak_rss_mib_main']:>17.0f}"
              f"  {r['peak_rss_mib_largest_worker']:>19.0f}")


if __name__ == "__main__":
    main()

"""`make bench`: featurize, the training data path, the training loop, (on CUDA) every GPU recipe and
predict on the CPU, measured side by side in one run; writes reports/bench.json (the figures) and
reports/bench.md.

    python -m bench.run [--out reports] [--sections featurize,training,gpu,predict] [--smoke]

--sections runs only those sections and keeps the others' figures from the bench.json already in
--out (each section records the machine it ran on): `--sections gpu` on a GPU machine adds its
figures to the CPU machine's. --smoke runs at toy sizes with one repeat, so the suite can keep the
benchmark alive (with --gpu-device cpu, the GPU section's code too); its figures mean nothing. Not a
pipeline stage: it generates its own demo data in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.featurize_bench import featurize_figures
from bench.gpu_bench import GpuSizes, gpu_figures
from bench.predict_bench import PredictSizes, predict_figures
from bench.report import write_reports
from bench.training_bench import training_figures
from stages.core.devices import resolve_device
from stages.core.params import load_params


@dataclass(frozen=True)
class Sizes:
    scales: list[int]           # featurize at these multiples of the demo size
    demo_overrides: dict        # params.yaml overrides for the featurize runs
    loader_chunks: int          # chunks in the synthetic 128 x 501 memmap
    loader_passes: int
    loop_steps: int             # batches in the bare-step and real-loop measurements
    gpu: GpuSizes
    predict: PredictSizes


FULL = Sizes(scales=[1, 4, 16], demo_overrides={}, loader_chunks=4096, loader_passes=3, loop_steps=4,
             gpu=GpuSizes(batch_sizes=[64, 128, 256], compile_batch_sizes=[256], steps=20, loop_chunks=6037,
                          loop_batch_size=64, matmul_size=8192),
             predict=PredictSizes(files=8, file_seconds=60, short_file_seconds=600, long_file_seconds=7200,
                                  batch_size=32))
SMOKE = Sizes(scales=[1, 2], demo_overrides={"demo.n_species": 3, "demo.recordings_per_species": 2,
                                             "demo.max_recording_seconds": 8.0, "demo.soundscape_seconds": 10},
              loader_chunks=48, loader_passes=1, loop_steps=1,
              gpu=GpuSizes(batch_sizes=[2], compile_batch_sizes=[], steps=1, loop_chunks=5, loop_batch_size=2,
                           matmul_size=256),
              predict=PredictSizes(files=1, file_seconds=10, short_file_seconds=20, long_file_seconds=40,
                                  batch_size=4))
SECTIONS = ("featurize", "training", "gpu", "predict")


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def run(params_path: Path, sizes: Sizes, smoke: bool, sections: list[str], gpu_device: str) -> dict:
    """The figures of `sections`, each with the machine it ran on and its wall time."""
    params = load_params(params_path)
    if smoke:
        params = smoke_params(params)
    results = {"smoke": smoke}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        for section in sections:
            started = time.perf_counter()
            results[section] = measure(section, params, sizes, workdir, gpu_device)
            results[f"{section}_run"] = {"machine": machine(), "seconds": time.perf_counter() - started}
    return results


def measure(section: str, params, sizes: Sizes, workdir: Path, gpu_device: str) -> dict | None:
    if section == "featurize":
        return featurize_figures(workdir, sizes.scales, sizes.demo_overrides)
    if section == "training":
        return training_figures(params, workdir, sizes.loader_chunks, sizes.loop_steps, sizes.loader_passes,
                                resolve_device(params.train.device))
    if section == "predict":
        return predict_figures(params, workdir, sizes.predict)
    if gpu_device == "cuda" and not torch.cuda.is_available():
        print("gpu: torch sees no CUDA device on this machine; section not measured", flush=True)
        return None
    return gpu_figures(params, workdir, sizes.gpu, torch.device(gpu_device))


def merged(results: dict, previous: Path) -> dict:
    """`results` over the sections of the bench.json at `previous` that this run did not measure."""
    if not previous.exists():
        return results
    kept = json.loads(previous.read_text())
    if kept.get("smoke") != results["smoke"]:
        return results  # never mix toy figures with real ones
    return {**kept, **results}


def smoke_params(params):
    """Tiny batches so the smoke run's training steps take well under a second on a CPU."""
    return replace(params, train=replace(params.train, batch_size=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, one repeat (for the test suite)")
    parser.add_argument("--gpu-device", default="cuda", choices=["cuda", "cpu"],
                        help="cpu: run the GPU section's code on the CPU (with --smoke, to test it)")
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    started = time.perf_counter()
    results = merged(run(args.params, SMOKE if args.smoke else FULL, args.smoke, sections, args.gpu_device),
                     args.out / "bench.json")
    write_reports(results, args.out)
    print(f"bench: wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} "
          f"in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()

"""`make bench`: featurize, the training data path, the training loop and (on CUDA) every GPU recipe,
measured side by side in one run; writes reports/bench.json (the figures) and reports/bench.md.

    python -m bench.run [--out reports] [--smoke]

--smoke runs every section at toy sizes with one repeat, so the suite can keep the benchmark alive;
its figures mean nothing. Not a pipeline stage: it generates its own demo data in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.featurize_bench import featurize_figures
from bench.gpu_bench import gpu_figures
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
    gpu_batch_sizes: list[int]
    gpu_steps: int
    gpu_loop_chunks: int
    gpu_loop_batch_size: int    # the real loop on CUDA: the batch of a real-data run (README)


FULL = Sizes(scales=[1, 4, 16], demo_overrides={}, loader_chunks=4096, loader_passes=3, loop_steps=4,
             gpu_batch_sizes=[64, 256], gpu_steps=20, gpu_loop_chunks=8192,
             gpu_loop_batch_size=64)
SMOKE = Sizes(scales=[1, 2], demo_overrides={"demo.n_species": 3, "demo.recordings_per_species": 2,
                                             "demo.max_recording_seconds": 8.0, "demo.soundscape_seconds": 10},
              loader_chunks=48, loader_passes=1, loop_steps=1, gpu_batch_sizes=[8], gpu_steps=1,
              gpu_loop_chunks=32, gpu_loop_batch_size=8)


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


def run(params_path: Path, sizes: Sizes, smoke: bool) -> dict:
    params = load_params(params_path)
    if smoke:
        params = smoke_params(params)
    started = time.perf_counter()
    results = {"smoke": smoke, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        results["featurize"] = featurize_figures(workdir, sizes.scales, sizes.demo_overrides)
        device = resolve_device(params.train.device)
        results["training"] = training_figures(params, workdir, sizes.loader_chunks, sizes.loop_steps,
                                               sizes.loader_passes, device)
        if torch.cuda.is_available():
            results["gpu"] = gpu_figures(params, workdir, sizes.gpu_batch_sizes, sizes.gpu_steps,
                                         sizes.gpu_loop_chunks, sizes.gpu_loop_batch_size)
        else:
            results["gpu"] = None
            results["gpu_reason"] = "torch sees no CUDA device on this machine"
    results["bench_seconds"] = time.perf_counter() - started
    return results


def smoke_params(params):
    """Tiny batches so the smoke run's training steps take well under a second on a CPU."""
    return replace(params, train=replace(params.train, batch_size=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--smoke", action="store_true", help="toy sizes, one repeat (for the test suite)")
    args = parser.parse_args()
    results = run(args.params, SMOKE if args.smoke else FULL, args.smoke)
    write_reports(results, args.out)
    print(f"bench: wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} "
          f"in {results['bench_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()

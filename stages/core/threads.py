"""How many CPU threads a setting means (`auto` or a number), without importing torch: stage
predict's ONNX path asks too, where torch may not be installed."""

from __future__ import annotations

import os


def cpu_threads(setting: int | str) -> int:
    """train.threads resolved: a number as given; `auto` is OMP_NUM_THREADS when set (so
    `OMP_NUM_THREADS=1 dvc queue start -j 2` gives each run one core), else the CPUs this process
    may run on (its affinity mask, which containers and `taskset` narrow; os.cpu_count() does not)."""
    if setting != "auto":
        return int(setting)
    from_env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) >= 1:
        return int(from_env)
    return len(os.sched_getaffinity(0))

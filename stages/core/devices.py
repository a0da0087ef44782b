"""Device choice and CPU threading shared by the stages: `auto` means CUDA when present, else CPU."""

from __future__ import annotations

import torch

from stages.core.threads import cpu_threads


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for in params.yaml but torch sees no CUDA GPU; "
                           "set device: auto or cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def pin_cpu_computation(setting: int | str, device: torch.device, sharing: int = 1) -> int:
    """Fix what makes CPU results vary between runs on one machine: the intra-op thread count (it
    decides how reductions are split) and non-deterministic kernels. `sharing` processes of one run
    (data-parallel ranks on one node) divide the threads among them. Returns this process's count."""
    threads = max(1, cpu_threads(setting) // sharing)
    torch.set_num_threads(threads)
    # On the CPU almost every kernel is deterministic already; this makes the rest raise (or use a
    # deterministic variant) instead of varying silently. On CUDA it would also need cuBLAS settings
    # and costs speed, so GPU runs are reproducible only up to rounding (README, Guarantees).
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    return threads

"""Measuring instruments of the GPU section: timed rates, the device's matmul peak, forward FLOPs,
and the share of wall time the GPU is busy (from the profiler's kernel intervals)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from bench.training_bench import N_CLASSES, N_FRAMES, N_MELS, STATS, synchronize
from stages.core.params import ModelParams
from stages.training.recipe import Recipe, model_for_recipe

WARM_UP_STEPS = 3  # cuDNN autotuning, compilation, the allocator


def timed_rate(step: Callable[[], object], batch_size: int, steps: int, device: torch.device) -> float:
    for _ in range(WARM_UP_STEPS):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def matmul_peak_tflops(device: torch.device, size: int, repeats: int = 20) -> float:
    """bf16 dense matmul TFLOP/s: the ceiling the models are compared with, measured, not looked up."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    seconds = size / timed_rate(lambda: a @ b, size, repeats, device)  # per product
    return 2 * size**3 / seconds / 1e12


def forward_gflop_per_sample(mp: ModelParams, device: torch.device) -> float:
    """Forward FLOPs of model `mp` as params.yaml configures it (its options set the patch grid)."""
    model = model_for_recipe(mp, N_CLASSES, STATS, device, Recipe("fp32", False, False, 2)).model
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(2, N_MELS, N_FRAMES, device=device))
    return counter.get_total_flops() / 2 / 1e9


def busy_share(run: Callable[[], object], device: torch.device) -> float | None:
    """The share of `run`'s wall time in which at least one CUDA kernel ran (kernel intervals from
    the profiler, merged so that overlapping streams count once). None off CUDA. The profiler's own
    overhead lengthens the wall time a little, so this is a lower bound."""
    if device.type != "cuda":
        return None
    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        run()
        synchronize(device)
        wall_us = (time.perf_counter() - started) * 1e6
    kernels = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA)
    busy, end_so_far = 0.0, float("-inf")
    for start, end in kernels:
        busy += max(0.0, end - max(start, end_so_far))
        end_so_far = max(end_so_far, end)
    return min(1.0, busy / wall_us)

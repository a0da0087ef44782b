"""GPU section of the benchmark: every recipe of every model, side by side, on one CUDA device.

Per model and recipe (precision, channels_last, torch.compile) and batch size: training and
inference samples/s of bare steps on device-resident tensors, peak memory, achieved TFLOP/s (FLOPs
from torch.utils.flop_counter) against the device's measured bf16 matmul peak. Then the real loop
with the default recipe, and the 50-epoch projection for BirdCLEF 2021.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.training_bench import N_CLASSES, N_FRAMES, N_MELS, STATS, loop_rate, synthetic_features
from stages.core.params import ModelParams, Params
from stages.models.registry import family_of
from stages.reporting.tables import recipe_text
from stages.training.batches import BatchReader
from stages.training.recipe import Recipe, model_for_recipe, step_context
from stages.training.trainer import build_trainer

BIRDCLEF_2021_RECORDINGS = 62_874  # one 5 s chunk per training recording per epoch
REFERENCE_HOURS = {"efficientnet_b0": 6.0, "ast_tiny": 9.0}  # 50 epochs on an RTX 2080 Ti
RECIPES = [  # (label, precision, channels_last, compile)
    ("fp32", "fp32", False, False),
    ("bf16", "bf16", False, False),
    ("bf16 + channels_last", "bf16", True, False),
    ("bf16 + compile", "bf16", False, True),
]


def matmul_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    """bf16 dense matmul TFLOP/s: the ceiling the models are compared with, measured, not looked up."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e12


def forward_gflop_per_sample(mp: ModelParams, device: torch.device) -> float:
    """Forward FLOPs of model `mp` as params.yaml configures it (its options set the patch grid)."""
    model = model_for_recipe(mp, N_CLASSES, STATS, device, Recipe("fp32", False, False, 2)).model
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(2, N_MELS, N_FRAMES, device=device))
    return counter.get_total_flops() / 2 / 1e9


def timed_rate(step, batch_size: int, steps: int) -> float:
    for _ in range(3):  # warm-up: cuDNN autotuning, compilation, allocator
        step()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - started)


def recipe_figures(params: Params, name: str, recipe: Recipe, steps: int, gflop: float, peak: float) -> dict:
    """Bare training and inference steps of model `name` with `recipe` (the pipeline's own Trainer)."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    device = torch.device("cuda")
    train_params = replace(params.train, precision=recipe.precision, channels_last=recipe.channels_last,
                           compile=recipe.compile, batch_size=recipe.batch_size)
    trainer = build_trainer(replace(params, train=train_params), name, N_CLASSES, STATS, device, steps)
    x = torch.randn(recipe.batch_size, N_MELS, N_FRAMES, device=device)
    y = torch.rand(recipe.batch_size, N_CLASSES, device=device)

    @torch.no_grad()
    def infer_step():
        with step_context(device, trainer.recipe):
            trainer.step_model(x)

    trainer.model.train()
    train = timed_rate(lambda: trainer.step(x, y), recipe.batch_size, steps)
    trainer.model.eval()
    infer = timed_rate(infer_step, recipe.batch_size, steps)
    train_tflops = 3 * gflop * train / 1e3  # backward costs about twice the forward
    return {"train_samples_per_second": train, "inference_samples_per_second": infer,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20,
            "train_tflops": train_tflops, "share_of_peak": train_tflops / peak}


def gpu_figures(params: Params, workdir: Path, batch_sizes: list[int], steps: int, loop_chunks: int,
                loop_batch_size: int) -> dict:
    """Section `gpu` of bench.json (call only when CUDA is available)."""
    peak = matmul_peak_tflops()
    figures = {"device": torch.cuda.get_device_name(), "bf16_matmul_peak_tflops": peak,
               "birdclef_2021_chunks_per_epoch": BIRDCLEF_2021_RECORDINGS, "models": {}}
    features = workdir / "gpu_features.npy"
    split = synthetic_features(features, loop_chunks)
    for name, mp in params.models.items():
        gflop = forward_gflop_per_sample(mp, torch.device("cuda"))
        rows = []
        for batch in batch_sizes:
            for label, precision, channels_last, compiled in RECIPES:
                if channels_last and family_of(mp.arch) == "transformer":
                    continue  # a memory format for convolutions: nothing to a transformer
                recipe = Recipe(precision, channels_last, compiled, batch)
                row = recipe_figures(params, name, recipe, steps, gflop, peak)
                print(f"gpu: {name} {label} batch {batch}: {row['train_samples_per_second']:,.0f} train / "
                      f"{row['inference_samples_per_second']:,.0f} inference samples/s, "
                      f"{row['peak_memory_mib']:,.0f} MiB", flush=True)
                rows.append({"recipe": label, "batch_size": batch, **row})
        loop = default_loop(params, name, features, split, loop_batch_size)
        print(f"gpu: {name} real loop, {recipe_text(loop['default_recipe'])}: "
              f"{loop['loop_samples_per_second']:,.0f} samples/s", flush=True)
        figures["models"][name] = {"forward_gflop_per_sample": gflop, "recipes": rows, **loop}
    return figures


def default_loop(params: Params, name: str, features: Path, split, batch_size: int) -> dict:
    """The real training loop with the recipe params.yaml resolves to at the batch size of a real-data
    run (the demo's batch of 8 would measure kernel launches), and the 50-epoch projection."""
    device = torch.device("cuda")
    params = replace(params, train=replace(params.train, batch_size=batch_size))
    reader = BatchReader(features, split, batch_size, device)
    trainer = build_trainer(params, name, N_CLASSES, STATS, device, len(reader))
    rate = loop_rate(trainer, reader)
    hours = 50 * BIRDCLEF_2021_RECORDINGS / rate / 3600
    return {"default_recipe": trainer.recipe.as_dict(), "loop_samples_per_second": rate,
            "projected_50_epoch_hours": hours, "reference_50_epoch_hours": REFERENCE_HOURS.get(name)}

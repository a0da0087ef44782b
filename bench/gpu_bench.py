"""GPU section of the benchmark: every recipe of every model, side by side, on one device.

Per model, recipe (precision, channels_last, torch.compile; cuDNN autotuning, fused optimizer and TF32
on, as `auto` sets them on CUDA) and batch size: training and inference samples/s of bare steps on
device-resident tensors, peak memory, achieved TFLOP/s against the device's measured bf16 matmul
peak, and the share of wall time the GPU is busy. Then each of those three switches off, one at a
time, on the model's default recipe; then the real loop (`Trainer.train_epoch` over chunks that do
not divide by the batch) with the default and with the fastest recipe; then the 50-epoch projection
for BirdCLEF 2021. `python -m bench.run --sections gpu` runs this section alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.gpu_profile import busy_share, forward_gflop_per_sample, matmul_peak_tflops, timed_rate
from bench.training_bench import N_CLASSES, N_FRAMES, N_MELS, STATS, loop_rate, synthetic_features
from stages.core.params import Params
from stages.models.registry import family_of
from stages.reporting.tables import recipe_text
from stages.training.batches import BatchReader
from stages.training.recipe import CUDA_ALWAYS, Recipe, resolve_recipe, step_context
from stages.training.trainer import Trainer, build_trainer

# The loop trains every chunk of the train split each epoch: about 400,000 chunks of BirdCLEF 2021
# at the reference's data.max_chunks_per_recording: 12 (about 8 per recording), not one per recording.
BIRDCLEF_2021_TRAIN_CHUNKS = 400_000
PROJECTED_GPUS = (1, 4, 8)  # ideal linear scaling beyond one: a projection, not a measurement
REFERENCE_HOURS = {"efficientnet_b0": 6.0, "ast_tiny": 9.0}  # 50 epochs on an RTX 2080 Ti
RECIPES = [  # (label, precision, channels_last, compile); compiled ones run at GpuSizes.compile_batch_sizes
    ("fp32", "fp32", False, False),
    ("bf16", "bf16", False, False),
    ("bf16 + channels_last", "bf16", True, False),
    ("fp32 + compile", "fp32", False, True),
    ("bf16 + compile", "bf16", False, True),
]
SWITCHES = tuple(CUDA_ALWAYS)  # each measured off, alone, against the default recipe


@dataclass(frozen=True)
class GpuSizes:
    batch_sizes: list[int]
    compile_batch_sizes: list[int]
    steps: int
    loop_chunks: int          # not a multiple of the batch: the real loop meets a short last batch
    loop_batch_size: int      # the default recipe's batch in the real loop (a real-data run's)
    matmul_size: int


def applies(precision: str, channels_last: bool, compiled: bool, arch: str) -> bool:
    if family_of(arch) == "transformer":
        return not channels_last and not (compiled and precision == "fp32")  # AST trains in bf16
    return True


def default_recipe(params: Params, arch: str, device: torch.device, sizes: GpuSizes) -> Recipe:
    """What params.yaml resolves to for `arch` on `device`, at the real loop's batch size."""
    return resolve_recipe(arch, device, replace(params.train, batch_size=sizes.loop_batch_size))


def make_trainer(params: Params, name: str, recipe: Recipe, device: torch.device, steps: int) -> Trainer:
    """The pipeline's own Trainer for model `name`, with exactly `recipe`."""
    return build_trainer(params, name, N_CLASSES, STATS, device, steps, recipe=recipe)


def recipe_figures(params: Params, name: str, recipe: Recipe, device: torch.device, steps: int, gflop: float,
                   peak: float) -> dict:
    """Bare training and inference steps of model `name` with `recipe` (the pipeline's own Trainer)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = make_trainer(params, name, recipe, device, steps)
    x = torch.randn(recipe.batch_size, N_MELS, N_FRAMES, device=device)
    y = torch.rand(recipe.batch_size, N_CLASSES, device=device)

    @torch.no_grad()
    def infer_step():
        with step_context(device, trainer.recipe):
            trainer.eval_model(x)

    trainer.model.train()
    train = timed_rate(lambda: trainer.step(x, y), recipe.batch_size, steps, device)
    busy = busy_share(lambda: [trainer.step(x, y) for _ in range(steps)], device)
    trainer.model.eval()
    infer = timed_rate(infer_step, recipe.batch_size, steps, device)
    train_tflops = 3 * gflop * train / 1e3  # backward costs about twice the forward
    return {"train_samples_per_second": train, "inference_samples_per_second": infer, "gpu_busy_share": busy,
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "train_tflops": train_tflops, "share_of_peak": train_tflops / peak}


def grid(params: Params, name: str, device: torch.device, sizes: GpuSizes) -> list[tuple[str, Recipe]]:
    """(label, recipe) of every row for model `name`: the recipe grid, then each switch off."""
    arch = params.models[name].arch
    rows = []
    for label, precision, channels_last, compiled in RECIPES:
        if not applies(precision, channels_last, compiled, arch):
            continue
        for batch in sizes.compile_batch_sizes if compiled else sizes.batch_sizes:
            rows.append((label, Recipe(precision, channels_last, compiled, batch, **CUDA_ALWAYS)))
    default = replace(default_recipe(params, arch, device, sizes), **CUDA_ALWAYS)
    for switch in SWITCHES:
        rows.append((f"default, {switch} off", replace(default, **{switch: False})))
    return rows


def gpu_figures(params: Params, workdir: Path, sizes: GpuSizes, device: torch.device) -> dict:
    """Section `gpu` of bench.json."""
    peak = matmul_peak_tflops(device, sizes.matmul_size)
    figures = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
               "bf16_matmul_peak_tflops": peak, "birdclef_2021_train_chunks_per_epoch": BIRDCLEF_2021_TRAIN_CHUNKS,
               "loop_chunks": sizes.loop_chunks, "models": {}}
    features = workdir / "gpu_features.npy"
    split = synthetic_features(features, sizes.loop_chunks)
    for name, mp in params.models.items():
        gflop = forward_gflop_per_sample(mp, device)
        rows = []
        for label, recipe in grid(params, name, device, sizes):
            row = recipe_figures(params, name, recipe, device, sizes.steps, gflop, peak)
            print(f"gpu: {name} {label} batch {recipe.batch_size}: {row['train_samples_per_second']:,.0f} train / "
                  f"{row['inference_samples_per_second']:,.0f} inference samples/s", flush=True)
            rows.append({"recipe": label, "batch_size": recipe.batch_size, "settings": recipe.as_dict(), **row})
        best = max(rows, key=lambda r: r["train_samples_per_second"])["settings"]
        default = default_recipe(params, mp.arch, device, sizes).as_dict()
        loops = {which: real_loop(params, name, Recipe(**settings), device, features, split)
                 for which, settings in (("default", default), ("best", best))}
        for which, loop in loops.items():
            print(f"gpu: {name} real loop, {which} recipe {recipe_text(loop['recipe'])}: "
                  f"{loop['loop_samples_per_second']:,.0f} samples/s", flush=True)
        figures["models"][name] = {"forward_gflop_per_sample": gflop, "recipes": rows, "loops": loops,
                                   "reference_50_epoch_hours": REFERENCE_HOURS.get(name)}
    return figures


def real_loop(params: Params, name: str, recipe: Recipe, device: torch.device, features: Path, split) -> dict:
    """`Trainer.train_epoch` with `recipe` over the synthetic chunks, and the 50-epoch projection."""
    reader = BatchReader(features, split, recipe.batch_size, device)
    trainer = make_trainer(params, name, recipe, device, len(reader))
    rate = loop_rate(trainer, reader)
    first = replace(split, feature_rows=split.feature_rows[:recipe.batch_size * 10],
                    targets=split.targets[:recipe.batch_size * 10])
    short = BatchReader(features, first, recipe.batch_size, device)
    busy = busy_share(lambda: trainer.train_epoch(short, torch.randperm(short.n_chunks), "profiled"), device)
    hours = 50 * BIRDCLEF_2021_TRAIN_CHUNKS / rate / 3600
    return {"recipe": recipe.as_dict(), "loop_samples_per_second": rate, "gpu_busy_share": busy,
            "projected_50_epoch_hours": {str(n): hours / n for n in PROJECTED_GPUS}}

"""The training data path, the real training loop and inference, against bare steps on in-memory tensors.

Runs on the device the pipeline would use (`auto`), with the recipe `train@<model>` would resolve
there, on a float16 feature memmap of BirdCLEF-sized chunks (128 x 501) with 397 classes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages.audio.store import FeatureStats
from stages.birdclef.prepared import SplitData
from stages.core.params import Params
from stages.evaluation.predict import predict
from stages.training.augment import Normalise
from stages.training.batches import BatchReader
from stages.training.trainer import Trainer, build_trainer

N_MELS, N_FRAMES, N_CLASSES = 128, 501, 397
# The distribution the synthetic rows are drawn from, as stats.json would describe it.
STATS = FeatureStats(mean=-6.0, std=4.0, n_values=0, shape=(0, N_MELS, N_FRAMES))


def synthetic_features(path: Path, n_chunks: int, seed: int = 0) -> SplitData:
    """A features.npy of `n_chunks` random log-mels and a split with random weak targets over all of it."""
    rng = np.random.default_rng(seed)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n_chunks, N_MELS, N_FRAMES))
    for begin in range(0, n_chunks, 256):
        block = array[begin:begin + 256]
        block[:] = rng.normal(STATS.mean, STATS.std, block.shape).astype(np.float16)
    array.flush()
    del array
    targets = np.zeros((n_chunks, N_CLASSES), dtype=np.float32)
    targets[np.arange(n_chunks), rng.integers(0, N_CLASSES, n_chunks)] = 1.0
    return SplitData(np.arange(n_chunks), targets, pd.DataFrame({"item_id": np.arange(n_chunks)}))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(reader: BatchReader, passes: int, normalise: Normalise | None = None) -> float:
    """Samples/s the data path delivers to the device (optionally normalised there too)."""
    delivered, started = 0, None
    for number in range(passes + 1):  # the first pass warms the page cache and the allocator
        if number == 1:
            synchronize(reader.device)
            started = time.perf_counter()
        for batch in reader.batches(torch.randperm(reader.n_chunks)):
            x = normalise(batch.x) if normalise is not None else batch.x
            delivered += len(x) if number else 0
    synchronize(reader.device)
    return delivered / (time.perf_counter() - started)


def bare_step_rate(trainer: Trainer, batch_size: int, steps: int) -> float:
    """Forward + backward + optimizer step on a batch already on the device: the loop's ceiling."""
    device = trainer.device
    x = torch.randn(batch_size, N_MELS, N_FRAMES, device=device)
    y = torch.rand(batch_size, N_CLASSES, device=device)
    trainer.model.train()
    for step in range(steps + 2):  # two warm-up steps (cuDNN autotuning, compilation)
        if step == 2:
            synchronize(device)
            started = time.perf_counter()
        trainer.step(x, y)
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def loop_rate(trainer: Trainer, reader: BatchReader) -> float:
    """Samples/s of `Trainer.train_epoch`, the loop `train@<model>` runs, after one warm-up pass."""
    trainer.train_epoch(reader, torch.randperm(reader.n_chunks), "warm-up")
    synchronize(trainer.device)
    started = time.perf_counter()
    trainer.train_epoch(reader, torch.randperm(reader.n_chunks), "timed")
    synchronize(trainer.device)
    return reader.n_chunks / (time.perf_counter() - started)


def model_figures(params: Params, model: str, features: Path, split: SplitData, device: torch.device,
                  steps: int) -> dict:
    """One model: bare step vs the real loop, inference, with the recipe train@<model> resolves."""
    trainer = build_trainer(params, model, N_CLASSES, STATS, device, steps)
    batch = trainer.recipe.batch_size
    loop_split = replace(split, feature_rows=split.feature_rows[:batch * steps],
                         targets=split.targets[:batch * steps])
    reader = BatchReader(features, loop_split, batch, device)
    bare = bare_step_rate(trainer, batch, steps)
    loop = loop_rate(trainer, reader)
    run = predict(trainer.model, reader, trainer.normalise, trainer.recipe, N_CLASSES)
    return {"recipe": trainer.recipe.as_dict(), "bare_step_samples_per_second": bare,
            "loop_samples_per_second": loop, "loop_efficiency": loop / bare,
            "inference_samples_per_second": reader.n_chunks / run.seconds}


def training_figures(params: Params, workdir: Path, n_chunks: int, steps: int, loader_passes: int,
                     device: torch.device) -> dict:
    """Section `training` of bench.json."""
    features = workdir / "bench_features.npy"
    split = synthetic_features(features, n_chunks)
    batch = params.train.batch_size
    reader = BatchReader(features, split, batch, device)
    print(f"training data path: {n_chunks} chunks of {N_MELS} x {N_FRAMES}, batch {batch}", flush=True)
    figures = {"device": str(device), "chunks": n_chunks, "batch_size": batch,
               "loader_samples_per_second": loader_rate(reader, loader_passes),
               "loader_normalised_samples_per_second": loader_rate(
                   reader, loader_passes, Normalise(STATS.mean, STATS.std)),
               "models": {}}
    for model in params.models:
        print(f"training loop: {model}", flush=True)
        figures["models"][model] = model_figures(params, model, features, split, device, steps)
    loader = figures["loader_samples_per_second"]
    figures["data_wait_share"] = {m: f["loop_samples_per_second"] / loader for m, f in figures["models"].items()}
    figures["loop_efficiency"] = {m: f["loop_efficiency"] for m, f in figures["models"].items()}
    return figures

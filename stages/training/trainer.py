"""One optimisation step, one epoch, one validation pass: the `Trainer`, built once per run.

BCE on the weak soft targets, Adam(W) with a linear warm-up and a cosine decay, both stepped per
batch, batches read whole from the feature memmap (stages/training/batches.py), background noise
(stages/training/noise.py), a time shift, normalisation, SpecAugment and mixup on the device, the
precision / memory format / compilation of stages/training/recipe.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from tqdm import tqdm

from stages.audio.store import FeatureStats
from stages.birdclef.prepared import load_split
from stages.core.params import Params
from stages.scoring import metrics
from stages.training.augment import Normalise, SpecAugment, mixup, time_shift
from stages.training.batches import BatchReader
from stages.training.distributed import SINGLE, World, average_buffers, gather_slices, sum_across, wrap
from stages.training.noise import Background
from stages.training.recipe import Recipe, apply_backend_flags, model_for_recipe, resolve_recipe, step_context


@dataclass(frozen=True)
class Validation:
    loss: float   # mean BCE per chunk and class
    map: float    # macro average precision over the classes present


@dataclass
class Trainer:
    """Everything one optimisation step needs, built once per run."""
    model: torch.nn.Module       # whose state_dict is saved
    step_model: torch.nn.Module  # what a training step calls: `eval_model`, in DDP when several ranks train
    eval_model: torch.nn.Module  # what validation calls: `model`, or `model` compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    normalise: Normalise
    augment: SpecAugment
    mixup_alpha: float
    recipe: Recipe
    device: torch.device
    world: World = SINGLE
    ema: ModelEmaV3 | None = None  # the weights' moving average, when train.ema_decay > 0
    background: Background | None = None  # noise mixed into training chunks, when train.* asks for it
    time_shift_frames: int = 0

    @property
    def kept_model(self) -> torch.nn.Module:
        """The weights validation scores and best.pt keeps: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.module

    def train_epoch(self, reader: BatchReader, order: torch.Tensor, desc: str) -> float:
        """One pass over `reader`'s chunks in `order` (an epoch's draw: all of them, or some per
        recording; this rank's share of each global batch); the mean training loss per chunk trained,
        over all ranks."""
        self.model.train()
        steps = reader.steps(self.world, len(order))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        first_bad_step = torch.full((), -1, device=self.device)  # the first step whose loss was not finite
        batches = reader.batches(order, self.world)
        for number, batch in enumerate(tqdm(batches, total=steps, desc=desc, unit="batch",
                                            disable=not self.world.is_main)):
            x, y = batch.x, batch.y
            if self.background is not None:
                x, y = self.background(x.float(), y)
            x = time_shift(x, self.time_shift_frames)
            x, y = mixup(self.augment(self.normalise(x)), y, self.mixup_alpha)
            # DDP averages gradients over ranks; weighting each rank's mean by its share of the global
            # batch makes that average the single-process gradient, even for uneven shares.
            share = len(y) * self.world.size / batch.global_size
            loss = self.step(x, y, share)
            loss_sum += loss * len(y)  # no .item(): the GPU never waits for Python
            if self.device.type == "cpu":  # free here; on a GPU the check waits for the epoch's end
                check_finite(loss, number, desc)
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), number, first_bad_step)
        if first_bad_step.item() >= 0:
            check_finite(torch.tensor(math.nan), int(first_bad_step.item()), desc)
        loss_sum = sum_across(loss_sum, self.world)
        average_buffers(self.model, self.world)
        return loss_sum.item() / reader.trained_chunks(self.world, len(order))

    def step(self, x: torch.Tensor, y: torch.Tensor, share: float = 1.0) -> torch.Tensor:
        """One forward + backward + optimizer step on a prepared batch; the (detached) mean loss.
        `share`: this rank's weight in the global batch (1 in a world of one)."""
        with step_context(self.device, self.recipe):
            logits = self.step_model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss if share == 1.0 else loss * share).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach()

    @torch.no_grad()
    def validate(self, reader: BatchReader) -> Validation:
        """Mean BCE per chunk and class, and mAP, on `reader`, in eval mode without augmentation.
        Each rank scores its own slice of the split; the scores of all are gathered on every rank."""
        self.model.eval()
        scored = self.eval_model if self.ema is None else self.ema.module
        bounds = self.world.slice_bounds(reader.n_chunks)
        begin, end = bounds[self.world.rank]
        logits, targets = [], []
        for batch in reader.batches(np.arange(begin, end)):
            with step_context(self.device, self.recipe):
                logits.append(scored(self.normalise(batch.x)).float())
            targets.append(batch.y)
        n_classes = reader.targets.shape[1]
        logits = torch.cat(logits) if logits else torch.zeros(0, n_classes, device=self.device)
        targets = torch.cat(targets) if targets else torch.zeros(0, n_classes, device=self.device)
        counts = [stop - start for start, stop in bounds]
        logits, targets = gather_slices(logits, self.world, counts), gather_slices(targets, self.world, counts)
        loss = F.binary_cross_entropy_with_logits(logits.double(), targets.double()).item()
        return Validation(loss, metrics.mean_average_precision(targets.cpu().numpy(), logits.cpu().numpy()))

    def unwrap(self) -> None:
        """Drop the DDP wrapper, before the process group goes (gloo can deadlock at exit otherwise)."""
        self.step_model = self.eval_model

    def state(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])


class Diverged(ArithmeticError):
    """Training produced a NaN or infinite loss."""


def check_finite(loss: torch.Tensor, step: int, desc: str) -> None:
    if not torch.isfinite(loss):
        raise Diverged(f"{desc}, step {step + 1}: the training loss is {loss.item()} (not finite); training stops "
                       "here. Usually the learning rate is too high (lr x models.<name>.lr_scale, with the "
                       "warm-up of train.warmup_epochs), or fp16 overflowed (try train.precision: bf16 or fp32).")


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int,
                  total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr rises linearly to its full value over `warmup_steps`, then follows a half cosine to
    zero at `total_steps`. The warm-up is the usual guard for a transformer trained from random
    weights at a high lr (the official AST code warms up too); 0 steps gives a plain cosine."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_trainer(params: Params, model_name: str, n_classes: int, stats: FeatureStats, device: torch.device,
                  steps_per_epoch: int, world: World = SINGLE, recipe: Recipe | None = None,
                  background: Background | None = None) -> Trainer:
    """The Trainer of one run; `recipe` overrides the one params.yaml resolves to (the benchmark's grid);
    `background`: the noise to mix in (needed when params.train uses_background)."""
    tp, mp = params.train, params.models[model_name]
    recipe = recipe or resolve_recipe(mp.arch, device, tp)
    apply_backend_flags(recipe)
    torch.manual_seed(params.seed)  # the same initial weights on every rank
    built = model_for_recipe(mp, n_classes, stats, device, recipe,
                             sync_batchnorm=world.distributed and device.type == "cuda")
    optimizer_class = torch.optim.AdamW if tp.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(built.model.parameters(), lr=params.effective_lr(model_name),
                                weight_decay=tp.weight_decay, fused=recipe.fused_optimizer or None)
    return Trainer(
        model=built.model, step_model=wrap(built.step_model, world, device), eval_model=built.step_model,
        optimizer=optimizer,
        scheduler=warmup_cosine(optimizer, round(tp.warmup_epochs * steps_per_epoch), tp.epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16"),
        normalise=Normalise(stats.mean, stats.std),
        augment=SpecAugment(tp.freq_mask, tp.time_mask).to(device),
        mixup_alpha=tp.mixup_alpha, recipe=recipe, device=device, world=world,
        # A copy of the starting weights, which every step then moves towards the trained ones.
        ema=ModelEmaV3(built.model, decay=tp.ema_decay) if tp.ema_decay > 0 else None,
        background=background, time_shift_frames=tp.time_shift_frames)


def make_readers(batch_size: int, prepared_dir: Path, features_dir: Path,
                 device: torch.device) -> tuple[BatchReader, BatchReader]:
    features = features_dir / "features.npy"
    return (BatchReader(features, load_split(prepared_dir, features_dir, "train"), batch_size, device),
            BatchReader(features, load_split(prepared_dir, features_dir, "valid"), batch_size, device))

"""One optimisation step, one epoch, one validation pass: the `Trainer`, built once per run.

BCE on the weak soft targets, Adam(W) with a linear warm-up and a cosine decay, both stepped per
batch, batches read whole from the feature memmap (stages/training/batches.py), normalisation,
SpecAugment and mixup on the device, the precision / memory format / compilation of
stages/training/recipe.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stages.audio.store import FeatureStats
from stages.birdclef.prepared import load_split
from stages.core.params import Params
from stages.scoring import metrics
from stages.training.augment import Normalise, SpecAugment, mixup
from stages.training.batches import BatchReader
from stages.training.recipe import Recipe, model_for_recipe, resolve_recipe, step_context


@dataclass(frozen=True)
class Validation:
    loss: float   # mean BCE per chunk and class
    map: float    # macro average precision over the classes present


@dataclass
class Trainer:
    """Everything one optimisation step needs, built once per run."""
    model: torch.nn.Module       # whose state_dict is saved
    step_model: torch.nn.Module  # what a step calls: `model`, or `model` compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    normalise: Normalise
    augment: SpecAugment
    mixup_alpha: float
    recipe: Recipe
    device: torch.device

    def train_epoch(self, reader: BatchReader, order: torch.Tensor, desc: str) -> float:
        """One pass over `reader` in `order`; the mean training loss per chunk."""
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for batch in tqdm(reader.batches(order), total=len(reader), desc=desc, unit="batch"):
            x, y = mixup(self.augment(self.normalise(batch.x)), batch.y, self.mixup_alpha)
            loss_sum += self.step(x, y) * len(y)  # no .item(): the GPU never waits for Python
        return loss_sum.item() / reader.n_chunks

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One forward + backward + optimizer step on a prepared batch; the (detached) mean loss."""
        with step_context(self.device, self.recipe):
            logits = self.step_model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    @torch.no_grad()
    def validate(self, reader: BatchReader) -> Validation:
        """Mean BCE per chunk and class, and mAP, on `reader`, in eval mode without augmentation."""
        self.model.eval()
        logits, targets = [], []
        for batch in reader.batches():
            with step_context(self.device, self.recipe):
                logits.append(self.step_model(self.normalise(batch.x)).float())
            targets.append(batch.y)
        logits, targets = torch.cat(logits), torch.cat(targets)
        loss = F.binary_cross_entropy_with_logits(logits.double(), targets.double()).item()
        return Validation(loss, metrics.mean_average_precision(targets.cpu().numpy(), logits.cpu().numpy()))

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


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
                  steps_per_epoch: int) -> Trainer:
    tp, mp = params.train, params.models[model_name]
    recipe = resolve_recipe(mp.arch, device, tp)
    torch.manual_seed(params.seed)
    built = model_for_recipe(mp, n_classes, stats, device, recipe)
    optimizer_class = torch.optim.AdamW if tp.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(built.model.parameters(), lr=params.effective_lr(model_name),
                                weight_decay=tp.weight_decay)
    return Trainer(
        model=built.model, step_model=built.step_model, optimizer=optimizer,
        scheduler=warmup_cosine(optimizer, round(tp.warmup_epochs * steps_per_epoch), tp.epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16"),
        normalise=Normalise(stats.mean, stats.std),
        augment=SpecAugment(tp.freq_mask, tp.time_mask).to(device),
        mixup_alpha=tp.mixup_alpha, recipe=recipe, device=device)


def make_readers(batch_size: int, prepared_dir: Path, features_dir: Path,
                 device: torch.device) -> tuple[BatchReader, BatchReader]:
    features = features_dir / "features.npy"
    return (BatchReader(features, load_split(prepared_dir, features_dir, "train"), batch_size, device),
            BatchReader(features, load_split(prepared_dir, features_dir, "valid"), batch_size, device))

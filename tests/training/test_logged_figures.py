"""Figures that reach the reports, against an independent computation on the same run: the lr
schedule's length against the optimizer steps the loop really takes (a short last batch included),
and every logged train loss against a BCE computed here from the model's own outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stages.training.trainer
from train_project import TrainRun, checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")

NO_AUGMENTATION = {"train.freq_mask": 0, "train.time_mask": 0, "train.mixup_alpha": 0.0}


def test_the_schedule_spans_exactly_the_optimizer_steps_taken(project, tmp_path, monkeypatch):
    """18 train chunks in batches of 4: 5 steps per epoch (the last of 2 chunks), not 18 // 4 = 4."""
    schedules, steps = [], []
    real_schedule, real_step = stages.training.trainer.warmup_cosine, stages.training.trainer.Trainer.step

    def warmup_cosine(optimizer, warmup_steps, total_steps):
        schedules.append((warmup_steps, total_steps))
        return real_schedule(optimizer, warmup_steps, total_steps)

    def step(self, *args, **kwargs):
        steps.append(self.scheduler.get_last_lr()[0])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(stages.training.trainer, "warmup_cosine", warmup_cosine)
    monkeypatch.setattr(stages.training.trainer.Trainer, "step", step)
    TrainRun(monkeypatch)(project, "ast_tiny", tmp_path / "out", {"train.epochs": 2, "train.warmup_epochs": 1.0})
    assert schedules == [(5, 10)] and len(steps) == 10
    assert steps[4] == pytest.approx(steps[3] * 5 / 4)  # warm-up ends at the 5th step: the full lr
    assert steps[-1] < 0.1 * steps[4]  # and the cosine has nearly reached 0 at the last step


def test_logged_train_losses_equal_a_bce_computed_independently(project, tmp_path, monkeypatch):
    """Mean BCE per chunk and class, weighted by batch size over the epoch: a loss summed over batch
    and classes, or averaged per batch without weights, would differ from this."""
    per_batch: list[tuple[int, float, int]] = []  # (epoch index, mean BCE, chunks)
    real_step = stages.training.trainer.Trainer.step

    def step(self, x, y, share=1.0):
        outputs, epoch = [], self.scheduler.last_epoch // 5  # 5 steps per epoch, counted before this one
        hook = self.model.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
        loss = real_step(self, x, y, share)
        hook.remove()
        logits, targets = outputs[0].double().numpy(), y.double().numpy()
        bce = np.logaddexp(0.0, logits) - targets * logits  # -[y log s(l) + (1 - y) log(1 - s(l))]
        per_batch.append((epoch, float(bce.mean()), len(y)))
        return loss

    monkeypatch.setattr(stages.training.trainer.Trainer, "step", step)
    TrainRun(monkeypatch)(project, "ast_tiny", tmp_path / "out", {"train.epochs": 2, **NO_AUGMENTATION})
    history = checkpoint(tmp_path / "out" / "last.pt")["history"]
    for epoch, record in enumerate(history):
        batches = [(loss, n) for e, loss, n in per_batch if e == epoch]
        expected = sum(loss * n for loss, n in batches) / sum(n for _, n in batches)
        assert record["train_loss"] == pytest.approx(expected, rel=1e-6), epoch
    assert torch.tensor([r["train_loss"] for r in history]).lt(1.0).all()  # per chunk and class, not summed

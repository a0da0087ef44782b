"""A run that diverges stops at the first non-finite loss, naming the epoch and step and the likely
cause, instead of training on NaN weights and failing later inside scikit-learn's mAP."""

from __future__ import annotations

import pytest
import torch

import stages.training.trainer
from train_project import TrainRun

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")


def test_a_huge_learning_rate_stops_at_the_first_nan_loss(project, tmp_path, monkeypatch):
    steps = []
    real_step = stages.training.trainer.Trainer.step

    def step(self, x, y, share=1.0):
        loss = real_step(self, x, y, share)
        steps.append(loss.item())
        return loss

    monkeypatch.setattr(stages.training.trainer.Trainer, "step", step)
    with pytest.raises(stages.training.trainer.Diverged) as raised:
        TrainRun(monkeypatch)(project, "ast_tiny", tmp_path / "out", {"lr": 1e6, "train.warmup_epochs": 0.0})
    first_bad = next(number for number, loss in enumerate(steps) if not torch.isfinite(torch.tensor(loss)))
    assert len(steps) == first_bad + 1  # not one step more
    message = str(raised.value)
    assert f"epoch 1/2, step {first_bad + 1}: the training loss is nan" in message.lower() or \
        f"epoch 1/2, step {first_bad + 1}: the training loss is inf" in message.lower()
    assert "learning rate is too high" in message
    assert not (tmp_path / "out" / "best.pt").exists()  # nothing trained on NaN is saved

"""train.ema_decay: a moving average of the weights (timm's ModelEmaV3) after every step, which
validation scores, best.pt keeps and a resumed run carries on exactly."""

from __future__ import annotations

import pytest
import torch

from helpers import error_for, raw_params, set_key
from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import read_classes
from stages.training.trainer import build_trainer
from train_project import RESUME, TrainRun, assert_same_weights, checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")
EMA = {"train.ema_decay": 0.9}


def test_the_average_follows_a_hand_computation(project):
    params = project.params(EMA)
    classes = read_classes(project.prepared)
    trainer = build_trainer(params, "efficientnet_b0", len(classes), read_feature_stats(project.features),
                            torch.device("cpu"), steps_per_epoch=3)
    floats = [name for name, value in trainer.model.state_dict().items() if value.is_floating_point()]
    expected = {name: trainer.model.state_dict()[name].clone() for name in floats}  # starts as the weights
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(4, 128, 101, generator=generator)
        y = torch.rand(4, len(classes), generator=generator)
        trainer.step(x, y)
        weights = trainer.model.state_dict()
        for name in floats:
            expected[name] = 0.9 * expected[name] + 0.1 * weights[name]
    averaged = trainer.ema.module.state_dict()
    for name in floats:
        torch.testing.assert_close(averaged[name], expected[name], rtol=1e-5, atol=1e-6)
    assert not torch.equal(averaged[floats[0]], trainer.model.state_dict()[floats[0]])
    assert trainer.kept_model is trainer.ema.module


def test_best_pt_keeps_the_averaged_weights_and_the_summary_says_so(project, tmp_path, monkeypatch):
    summary = TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "out", {**EMA, "train.epochs": 1})
    last = checkpoint(tmp_path / "out" / "last.pt")
    assert_same_weights(checkpoint(tmp_path / "out" / "best.pt")["model"], last["ema"])
    assert summary["weights"] == "EMA, decay 0.9"
    plain = TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "plain", {"train.epochs": 1})
    assert plain["weights"] == "last step" and "ema" not in checkpoint(tmp_path / "plain" / "last.pt")


def test_a_resumed_run_with_the_average_ends_as_an_uninterrupted_one(project, tmp_path, monkeypatch):
    overrides = {**RESUME, **EMA}
    TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "reference", overrides)
    stopped = TrainRun(monkeypatch, stop_after_epoch=1)
    assert stopped(project, "efficientnet_b0", tmp_path / "resumed", overrides) is None
    TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "resumed", overrides)
    reference, resumed = checkpoint(tmp_path / "reference" / "last.pt"), checkpoint(tmp_path / "resumed" / "last.pt")
    assert_same_weights(resumed["ema"], reference["ema"])
    assert_same_weights(resumed["model"], reference["model"])
    assert_same_weights(checkpoint(tmp_path / "resumed" / "best.pt")["model"],
                        checkpoint(tmp_path / "reference" / "best.pt")["model"])


@pytest.mark.parametrize("value", [1.0, -0.1, "high"])
def test_a_decay_outside_0_to_1_is_refused(value):
    assert "train.ema_decay" in error_for(set_key(raw_params(), "train.ema_decay", value))

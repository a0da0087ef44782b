"""The train stage on real data: the tiny demo set cut into 1 s chunks (128 x 101 log-mels),
prepared and featurized by the real stages, then real training on the CPU.

Covers: the loss goes down and the outputs (checkpoints, DVCLive metrics and curves, valid mAP per
epoch, the convergence readouts) are complete; an unknown arch fails before anything is written. The
resume rule is in test_resume.py, the lr schedule in test_trainer.py.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import stages.featurize
import stages.prepare
import stages.training.loop
import stages.training.trainer
from stages.birdclef.prepared import read_classes
from stages.evaluation.run import evaluate
from stages.models.factory import create_model
from stages.training.loop import TrainPaths
from train_project import assert_same_weights, checkpoint, paths_beside, read_tsv

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")


# ------------------------------------------------------------------------ training and outputs

# Batches of 6 (no batch of 2 for BatchNorm), no SpecAugment: a less noisy loss for 6 epochs.
@pytest.mark.parametrize("model, lr", [("efficientnet_b0", 5e-4), ("ast_tiny", 1e-3)])  # AST: x 0.2
def test_short_training_lowers_the_loss_and_writes_complete_outputs(project, model, lr, tmp_path):
    epochs = 6
    params = project.params({"lr": lr, "train.epochs": epochs, "train.batch_size": 6, "train.warmup_epochs": 1.0,
                             "train.freq_mask": 0, "train.time_mask": 0})
    out, live = tmp_path / "model", tmp_path / "live"
    summary = stages.training.loop.train(params, model, project.prepared, project.features,
                                         TrainPaths(out, live, tmp_path / "resume"))

    # The loss goes down: DVCLive's curve has one row per epoch, steps 1..epochs (epochs, 1-based).
    train_tsv = read_tsv(live, "train_loss")
    assert train_tsv["step"].tolist() == list(range(1, epochs + 1))
    losses = train_tsv["train_loss"].tolist()
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.8 * losses[0], f"train loss did not go down: {losses}"
    for metric in ("valid_loss", "valid_map", "lr", "epoch_seconds", "train_samples_per_second"):
        assert read_tsv(live, metric)["step"].tolist() == list(range(1, epochs + 1)), metric
    valid_map = read_tsv(live, "valid_map")["valid_map"].tolist()
    assert all(0.0 <= value <= 1.0 for value in valid_map), valid_map

    # The checkpoints load without pickle and agree with the curves.
    last, best = checkpoint(out / "last.pt"), checkpoint(out / "best.pt")
    assert last["epoch"] == epochs
    assert [r["epoch"] for r in last["history"]] == list(range(1, epochs + 1))
    assert [r["train_loss"] for r in last["history"]] == losses
    assert [r["valid_loss"] for r in last["history"]] == read_tsv(live, "valid_loss")["valid_loss"].tolist()
    assert [r["valid_map"] for r in last["history"]] == valid_map
    assert best["epoch"] == summary["best_epoch"]
    assert best["arch"] == params.models[model].arch and best["classes"] == read_classes(project.prepared)
    assert last["best"]["epoch"] == best["epoch"]
    assert_same_weights(last["best"]["model"], best["model"])  # the kept copy, not the live weights
    assert best["valid_loss"] == summary["min_valid_loss"] == min(r["valid_loss"] for r in last["history"])
    net = create_model(params.models[model].arch, len(read_classes(project.prepared)), 128, 101, False, params.models[model].options)
    net.load_state_dict(best["model"])  # strict: exactly this model's weights
    net.load_state_dict(last["model"])

    # The lr of each epoch's first step: epoch 1 starts the warm-up at 1/3 of the effective lr (3
    # steps per epoch: 18 chunks in batches of 6), epoch 2 starts the cosine at the full lr, which decays.
    lrs = read_tsv(live, "lr")["lr"].tolist()
    effective_lr = params.lr * params.models[model].lr_scale
    assert lrs[0] == pytest.approx(effective_lr / 3)
    assert lrs[1] == pytest.approx(effective_lr) and lrs[1:] == sorted(lrs[1:], reverse=True) and lrs[-1] > 0

    # DVCLive's metrics.json: the last epoch plus the run summary.
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["effective_lr"] == effective_lr == summary["effective_lr"]
    assert metrics["step"] == epochs
    assert metrics["epochs"] == epochs
    assert metrics["params_total"] == sum(p.numel() for p in net.parameters())
    assert metrics["params_trainable"] == metrics["params_total"]
    assert metrics["wall_clock_seconds"] > 0
    assert metrics["wall_clock_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in last["history"]))
    assert metrics["peak_memory_mib"] > 50
    assert metrics["device"] == "cpu"
    assert metrics["train_loss"] == losses[-1] and metrics["min_train_loss"] == min(losses)
    assert metrics["max_valid_map"] == max(valid_map)
    assert metrics["cpu_threads"] == 1 and torch.get_num_threads() == 1  # train.threads: 1
    assert {k: metrics[k] for k in summary} == summary

    # The convergence readouts, from the history by hand: the first epoch at most 10% above the final
    # valid loss, the seconds up to its end, the valid loss at the end of epochs 2, 3, 5, 6 (ceil of
    # 6/4, 12/4, 18/4, 24/4).
    valid_losses = [r["valid_loss"] for r in last["history"]]
    reached = next(i for i, loss in enumerate(valid_losses) if loss <= 1.1 * valid_losses[-1])
    assert metrics["convergence"] == {
        "learned": valid_losses[-1] < 0.9 * valid_losses[0], "valid_loss_first": valid_losses[0],
        "epochs_to_within_10pct": reached + 1,
        "seconds_to_within_10pct": pytest.approx(sum(r["epoch_seconds"] for r in last["history"][:reached + 1])),
        "valid_loss_q1": valid_losses[1], "valid_loss_q2": valid_losses[2],
        "valid_loss_q3": valid_losses[4], "valid_loss_q4": valid_losses[5]}

    # The valid mAP logged for the best epoch is the one evaluate finds for best.pt on the same chunks.
    result = evaluate(params, model, project.prepared, project.features, out / "best.pt", tmp_path / "eval")
    assert valid_map[best["epoch"] - 1] == pytest.approx(result["valid"]["map"], abs=1e-6)


def test_unknown_arch_fails_when_the_model_is_created(project, tmp_path):
    params = project.params({"models.efficientnet_b0.arch": "no_such_net"})  # timm is not asked here
    with pytest.raises(ValueError, match="Unknown model arch 'no_such_net'"):
        stages.training.loop.train(params, "efficientnet_b0", project.prepared, project.features,
                                   paths_beside(tmp_path / "model", resume=tmp_path / "resume"))
    assert not (tmp_path / "model" / "last.pt").exists() and not (tmp_path / "resume").exists()

"""The training run of stage train@<model>: epochs, validation, checkpoints, resume, DVCLive.

Plain PyTorch, top to bottom; one DVCLive step per epoch. Resume rule: after every epoch the whole
training state is written to `<resume-dir>/<model>-<fingerprint>/last.pt`, outside the stage's
outputs (DVC clears those before a run) and keyed by the run's fingerprint (this model's params, lr,
seed, the train section and the data). A run finds the state of its own configuration, if an
interrupted run left one, and continues after its last epoch; otherwise it starts from scratch.
When training completes, the state moves to `<out>/last.pt`, next to `<out>/best.pt`. Each epoch's
randomness depends only on (seed, epoch), so an interrupted and resumed run ends with the same
weights and curves as an uninterrupted one. With no `persist` outputs, DVC's run-cache restores a
configuration run before.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from dvclive import Live

from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import read_classes
from stages.core.devices import device_name, pin_cpu_computation, resolve_device
from stages.core.params import Params
from stages.models.factory import count_parameters
from stages.training.checkpoints import load_resumable, resume_path, run_fingerprint, save
from stages.training.convergence import convergence
from stages.training.trainer import Trainer, build_trainer, make_readers


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def log_epoch(live: Live, record: dict) -> None:
    live.step = record["epoch"]  # 1-based, like best_epoch, the curves and the report
    for name in ("train_loss", "valid_loss", "valid_map", "lr", "epoch_seconds", "train_samples_per_second"):
        live.log_metric(name, record[name])
    live.next_step()


@dataclass(frozen=True)
class TrainPaths:
    out: Path      # best.pt, and last.pt once training completes (a DVC output)
    live: Path     # the DVCLive folder (a DVC output)
    resume: Path   # where unfinished runs keep their state (git-ignored, not an output)


def train(params: Params, model_name: str, prepared_dir: Path, features_dir: Path, paths: TrainPaths) -> dict:
    tp = params.train
    device = resolve_device(tp.device)
    threads = pin_cpu_computation(tp.threads, device)
    classes = read_classes(prepared_dir)
    stats = read_feature_stats(features_dir)
    train_reader, valid_reader = make_readers(tp.batch_size, prepared_dir, features_dir, device)
    trainer = build_trainer(params, model_name, len(classes), stats, device, len(train_reader))
    print(f"train@{model_name}: {train_reader.n_chunks} train / {valid_reader.n_chunks} valid chunks on "
          f"{device_name(device)} ({threads} CPU threads), recipe {trainer.recipe.as_dict()}", flush=True)

    fingerprint = run_fingerprint(params, model_name, prepared_dir, features_dir)
    state_path = resume_path(paths.resume, model_name, fingerprint)
    history, best, start_epoch = [], {"valid_loss": math.inf}, 0
    resumed = load_resumable(state_path, fingerprint, tp.epochs)
    paths.out.mkdir(parents=True, exist_ok=True)
    (paths.out / "best.pt").unlink(missing_ok=True)  # a best.pt of another run must not survive
    if resumed is not None:
        trainer.load_state(resumed)
        history, best, start_epoch = resumed["history"], resumed["best"], resumed["epoch"]
        save(best, paths.out / "best.pt")
        print(f"train@{model_name}: resuming after epoch {start_epoch} of {tp.epochs} from {state_path}",
              flush=True)

    # A fresh DVCLive directory that replays the epochs already done, so the curves of a resumed
    # run are exactly those of an uninterrupted one.
    live = Live(str(paths.live), dvcyaml=False, save_dvc_exp=False)
    for record in history:
        log_epoch(live, record)

    for epoch in range(start_epoch, tp.epochs):
        torch.manual_seed(params.seed * 1000 + epoch)  # shuffling, masks, mixup, dropout, patchout
        started = time.perf_counter()
        epoch_lr = trainer.scheduler.get_last_lr()[0]
        order = torch.randperm(train_reader.n_chunks)
        train_loss = trainer.train_epoch(train_reader, order, f"train@{model_name} epoch {epoch + 1}/{tp.epochs}")
        train_seconds = time.perf_counter() - started
        valid = trainer.validate(valid_reader)
        valid_loss = valid.loss
        record = {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss, "valid_map": valid.map,
                  "lr": epoch_lr, "epoch_seconds": time.perf_counter() - started,
                  "train_samples_per_second": train_reader.n_chunks / train_seconds}
        history.append(record)
        log_epoch(live, record)
        print(f"train@{model_name} epoch {epoch + 1}/{tp.epochs}: train loss {train_loss:.4f}, valid loss "
              f"{valid_loss:.4f}, valid mAP {valid.map:.3f}, {record['train_samples_per_second']:.1f} samples/s",
              flush=True)
        if valid_loss < best["valid_loss"]:
            # A copy: state_dict() tensors are the live weights, which later epochs keep changing.
            weights = {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()}
            best = {"model": weights, "epoch": epoch + 1, "valid_loss": valid_loss,
                    "arch": params.models[model_name].arch, "classes": classes}
            save(best, paths.out / "best.pt")
        save({**trainer.state(), "epoch": epoch + 1, "history": history, "best": best,
              "fingerprint": fingerprint}, state_path)
    state_path.replace(paths.out / "last.pt")  # complete: the state is an output now, not resume work
    if not any(state_path.parent.iterdir()):  # a last.pt.damaged set aside stays for inspection
        state_path.parent.rmdir()

    summary = summarise(params.effective_lr(model_name), tp.epochs, trainer, history, device)
    summary["cpu_threads"] = threads
    live.summary.update(summary)
    live.end()
    return summary


def summarise(lr: float, epochs: int, trainer: Trainer, history: list[dict], device: torch.device) -> dict:
    total_params, trainable_params = count_parameters(trainer.model)
    return {
        "effective_lr": lr,
        "epochs": epochs,
        "params_total": total_params,
        "params_trainable": trainable_params,
        "min_train_loss": min(r["train_loss"] for r in history),
        "min_valid_loss": min(r["valid_loss"] for r in history),
        "best_epoch": min(history, key=lambda r: r["valid_loss"])["epoch"],
        "max_valid_map": max(r["valid_map"] for r in history),
        "convergence": convergence(history),
        "wall_clock_seconds": sum(r["epoch_seconds"] for r in history),
        "mean_epoch_seconds": sum(r["epoch_seconds"] for r in history) / len(history),
        "mean_train_samples_per_second": sum(r["train_samples_per_second"] for r in history) / len(history),
        "peak_memory_mib": peak_memory_mib(device),
        "device": device_name(device),
        "torch_version": torch.__version__,
        "recipe": trainer.recipe.as_dict(),
    }

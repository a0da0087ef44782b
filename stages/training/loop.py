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

Data-parallel (stages/training/distributed.py): every rank runs this loop on its share of each
global batch; rank 0 alone writes checkpoints, DVCLive, progress lines and the resume state, and
every rank resumes from it.
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
from stages.core.params import Params, ParamsError, TrainParams, load_params
from stages.models.factory import count_parameters
from stages.training.checkpoints import load_resumable, resume_path, run_fingerprint, save
from stages.training.convergence import convergence
from stages.training.augment import describe_augmentation
from stages.training.batches import BatchReader
from stages.training.crops import EpochCrops
from stages.training.distributed import (RANK_SEED_STRIDE, SINGLE, World, WorldError, barrier, process_group,
                                         rank_device, world_from_env)
from stages.training.noise import Background
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
    background: Path | None = None  # stage background's features, when train.* mixes noise in


def train(params: Params, model_name: str, prepared_dir: Path, features_dir: Path, paths: TrainPaths,
          world: World = SINGLE) -> dict:
    """Train model `model_name` as this rank of `world` (inside its process group); the summary."""
    tp = params.train
    device = rank_device(resolve_device(tp.device), world)
    threads = pin_cpu_computation(tp.threads, device, sharing=world.local_size)
    classes = read_classes(prepared_dir)
    stats = read_feature_stats(features_dir)
    train_reader, valid_reader = make_readers(tp.batch_size, prepared_dir, features_dir, device)
    if tp.batch_size < world.size:
        raise WorldError(f"train.batch_size: {tp.batch_size} is the global batch; {world.size} processes need "
                         "at least one chunk each: raise it or lower train.processes")
    crops = EpochCrops(train_reader.split, tp.chunks_per_recording)
    background = background_for(tp, paths.background, device)
    trainer = build_trainer(params, model_name, len(classes), stats, device, train_reader.steps(world, crops.size),
                            world, background=background)
    say = print if world.is_main else (lambda *args, **kwargs: None)
    ranks = f"{world.size} processes, each on " if world.distributed else ""
    per_epoch = "" if crops.size == train_reader.n_chunks else f" ({crops.size} an epoch)"
    say(f"train@{model_name}: {train_reader.n_chunks} train{per_epoch} / {valid_reader.n_chunks} valid chunks, "
        f"{ranks}{device_name(device)} ({threads} CPU threads), recipe {trainer.recipe.as_dict()}", flush=True)

    fingerprint = run_fingerprint(params, model_name, prepared_dir, features_dir, world.size,
                                  paths.background if background else None)
    state_path = resume_path(paths.resume, model_name, fingerprint)
    history, best, start_epoch = [], {"valid_loss": math.inf}, 0
    resumed = resume_state(state_path, fingerprint, tp.epochs, world)
    if world.is_main:
        paths.out.mkdir(parents=True, exist_ok=True)
        (paths.out / "best.pt").unlink(missing_ok=True)  # a best.pt of another run must not survive
    if resumed is not None:
        trainer.load_state(resumed)
        history, best, start_epoch = resumed["history"], resumed["best"], resumed["epoch"]
        if world.is_main:
            save(best, paths.out / "best.pt")
        say(f"train@{model_name}: resuming after epoch {start_epoch} of {tp.epochs} from {state_path}", flush=True)

    # A fresh DVCLive directory that replays the epochs already done, so the curves of a resumed
    # run are exactly those of an uninterrupted one.
    live = Live(str(paths.live), dvcyaml=False, save_dvc_exp=False) if world.is_main else None
    for record in history if live else []:
        log_epoch(live, record)

    try:
        for epoch in range(start_epoch, tp.epochs):
            record = train_one_epoch(params, trainer, train_reader, valid_reader, crops, epoch,
                                     f"train@{model_name} epoch {epoch + 1}/{tp.epochs}")
            history.append(record)
            if not world.is_main:
                continue
            log_epoch(live, record)
            say(f"train@{model_name} epoch {epoch + 1}/{tp.epochs}: train loss {record['train_loss']:.4f}, valid "
                f"loss {record['valid_loss']:.4f}, valid mAP {record['valid_map']:.3f}, "
                f"{record['train_samples_per_second']:.1f} samples/s", flush=True)
            if record["valid_loss"] < best["valid_loss"]:
                # A copy: state_dict() tensors are the live weights, which later epochs keep changing.
                weights = {name: tensor.detach().clone() for name, tensor in trainer.kept_model.state_dict().items()}
                best = {"model": weights, "epoch": epoch + 1, "valid_loss": record["valid_loss"],
                        "arch": params.models[model_name].arch, "classes": classes}
                save(best, paths.out / "best.pt")
            save({**trainer.state(), "epoch": epoch + 1, "history": history, "best": best,
                  "fingerprint": fingerprint}, state_path)
    finally:
        trainer.unwrap()

    summary = summarise(params.effective_lr(model_name), tp.epochs, trainer, history, device)
    summary.update(cpu_threads=threads, processes=world.size, augmentation=describe_augmentation(tp))
    if world.is_main:
        state_path.replace(paths.out / "last.pt")  # complete: the state is an output now, not resume work
        if not any(state_path.parent.iterdir()):  # a last.pt.damaged set aside stays for inspection
            state_path.parent.rmdir()
        live.summary.update(summary)
        live.end()
    return summary


def background_for(tp: TrainParams, features_dir: Path | None, device: torch.device) -> Background | None:
    """The noise training mixes in, or None when train.* mixes none."""
    if not tp.uses_background:
        return None
    if features_dir is None:
        raise ParamsError("train.background_probability / nocall_probability are on, but no background features "
                         "were given (--background, the output of stage background)")
    return Background(features_dir, tp, device)


def train_one_epoch(params: Params, trainer: Trainer, train_reader: BatchReader, valid_reader: BatchReader,
                    crops: EpochCrops, epoch: int, desc: str) -> dict:
    """Train and validate epoch `epoch` (0-based); its record of the history (1-based)."""
    world = trainer.world
    torch.manual_seed(params.seed * 1000 + epoch)  # crops, order, noise, shift, masks, mixup, dropout, patchout
    started = time.perf_counter()
    epoch_lr = trainer.scheduler.get_last_lr()[0]
    order = crops.draw()  # the same on every rank
    if world.rank:  # augmentation differs per rank, and depends on (seed, epoch, rank) only
        torch.manual_seed(params.seed * 1000 + epoch + RANK_SEED_STRIDE * world.rank)
    train_loss = trainer.train_epoch(train_reader, order, desc)
    train_seconds = time.perf_counter() - started
    valid = trainer.validate(valid_reader)
    return {"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid.loss, "valid_map": valid.map,
            "lr": epoch_lr, "epoch_seconds": time.perf_counter() - started,
            "train_samples_per_second": train_reader.trained_chunks(world, len(order)) / train_seconds}


def resume_state(state_path: Path, fingerprint: str, epochs: int, world: World) -> dict | None:
    """The resume state every rank starts from. Rank 0 looks first (and sets a damaged one aside);
    the others read what it left once it has."""
    resumed = load_resumable(state_path, fingerprint, epochs) if world.is_main else None
    barrier(world)
    if not world.is_main:
        resumed = load_resumable(state_path, fingerprint, epochs)
    return resumed


def train_rank(params_path: Path, model_name: str, prepared_dir: Path, features_dir: Path,
               paths: TrainPaths) -> dict:
    """One rank of a data-parallel run (started by `torchrun` or `launch`): the world comes from the
    environment; the process group lives as long as the training."""
    world = world_from_env() or SINGLE
    params = load_params(params_path, timm_archs=True)
    device = rank_device(resolve_device(params.train.device), world)
    with process_group(world, device):
        summary = train(params, model_name, prepared_dir, features_dir, paths, world)
    if world.is_main:
        print(f"train@{model_name}: min valid loss {summary['min_valid_loss']:.4g}, "
              f"{summary['mean_epoch_seconds']:.1f} s/epoch, {summary['params_total']:,} parameters, "
              f"{world.size} process{'es' if world.distributed else ''}", flush=True)
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
        # What validation scored and best.pt holds: the weights' moving average (decay), or the last step's.
        "weights": f"EMA, decay {trainer.ema.decay:g}" if trainer.ema is not None else "last step",
    }

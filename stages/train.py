"""Stage train@<model>: train one model of params.yaml `models` on the featurized chunks.

Plain PyTorch, top to bottom: BCE on the weak soft targets, Adam(W) with a linear warm-up and a
cosine decay, both stepped per batch, batches read whole from the feature memmap
(stages/batches.py), normalisation, SpecAugment and mixup on the device, the precision / memory
format / compilation of stages/recipe.py.
One DVCLive step per epoch.

Resume rule: after every epoch the whole training state is written to
`<resume-dir>/<model>-<fingerprint>/last.pt`, outside the stage's outputs (DVC clears those before a
run) and keyed by the run's fingerprint (this model's params, lr, seed, the train section and the
data). A run finds the state of its own configuration, if an interrupted run left one, and
continues after its last epoch; otherwise it starts from scratch. When training completes, the
state moves to `<out>/last.pt`, next to `<out>/best.pt`. Each epoch's randomness depends only on
(seed, epoch), so an interrupted and resumed run ends with the same weights and curves as an
uninterrupted one. With no `persist` outputs, DVC's run-cache restores a configuration run before.

    python -m stages.train --params params.yaml --model ast_tiny --prepared data/prepared \
        --features data/features --out models/ast_tiny --live reports/train/ast_tiny --resume-dir .resume
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from dvclive import Live
from tqdm import tqdm

from stages import metrics
from stages.augment import Normalise, SpecAugment, mixup
from stages.batches import BatchReader
from stages.checkpoints import load_resumable, resume_path, run_fingerprint, save
from stages.convergence import convergence
from stages.datasets import load_split, read_classes, read_feature_stats
from stages.devices import device_name, pin_cpu_computation, resolve_device
from stages.models import count_parameters, create_model
from stages.params import Params, load_params
from stages.recipe import Recipe, prepare_model, resolve_recipe, step_context


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


def build_trainer(params: Params, model_name: str, n_classes: int, n_mels: int, n_frames: int,
                  stats: dict, device: torch.device, steps_per_epoch: int) -> Trainer:
    tp, mp = params.train, params.models[model_name]
    recipe = resolve_recipe(mp.arch, device, tp)
    torch.manual_seed(params.seed)
    model = create_model(mp.arch, n_classes, n_mels, n_frames, mp.pretrained, mp.options).to(device)
    step_model = prepare_model(model, recipe)
    optimizer_class = torch.optim.AdamW if tp.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=params.effective_lr(model_name), weight_decay=tp.weight_decay)
    return Trainer(
        model=model, step_model=step_model, optimizer=optimizer,
        scheduler=warmup_cosine(optimizer, round(tp.warmup_epochs * steps_per_epoch), tp.epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16"),
        normalise=Normalise(stats["mean"], stats["std"]),
        augment=SpecAugment(tp.freq_mask, tp.time_mask).to(device),
        mixup_alpha=tp.mixup_alpha, recipe=recipe, device=device)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_readers(batch_size: int, prepared_dir: Path, features_dir: Path,
                 device: torch.device) -> tuple[BatchReader, BatchReader]:
    features = features_dir / "features.npy"
    return (BatchReader(features, load_split(prepared_dir, features_dir, "train"), batch_size, device),
            BatchReader(features, load_split(prepared_dir, features_dir, "valid"), batch_size, device))


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
    n_mels, n_frames = stats["shape"][1:]
    train_reader, valid_reader = make_readers(tp.batch_size, prepared_dir, features_dir, device)
    trainer = build_trainer(params, model_name, len(classes), n_mels, n_frames, stats, device, len(train_reader))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    parser.add_argument("--resume-dir", type=Path, required=True,
                        help="where unfinished runs keep their state (git-ignored, not a DVC output)")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.model not in params.models:
        raise SystemExit(f"--model {args.model}: not a key of `models` in {args.params} "
                         f"(have: {', '.join(params.models)})")
    paths = TrainPaths(out=args.out, live=args.live, resume=args.resume_dir)
    summary = train(params, args.model, args.prepared, args.features, paths)
    print(f"train@{args.model}: min valid loss {summary['min_valid_loss']:.4g}, "
          f"{summary['mean_epoch_seconds']:.1f} s/epoch, {summary['params_total']:,} parameters")


if __name__ == "__main__":
    main()

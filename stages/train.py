"""Stage train@<model>: train one model of params.yaml `models` on the featurized chunks.

Plain PyTorch, top to bottom: BCE on the weak soft targets, Adam(W) with a cosine schedule,
SpecAugment and mixup, mixed precision on CUDA. One DVCLive step per epoch.

Resume rule: `<out>/last.pt` is written after every epoch. If the stage is run again and that
checkpoint was made by the same configuration (this model's params, lr, seed, the train section
and the data) and has fewer than train.epochs epochs, training continues after its last epoch;
otherwise it starts from scratch. Each epoch's randomness depends only on (seed, epoch), so an
interrupted and resumed run ends with the same weights and curves as an uninterrupted one.

    python -m stages.train --params params.yaml --model ast_tiny --prepared data/prepared \
        --features data/features --out models/ast_tiny --live reports/train/ast_tiny
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from dvclive import Live
from tqdm import tqdm

from stages.atomic import atomic_path
from stages.datasets import ChunkDataset, load_split, read_classes, read_feature_stats
from stages.devices import device_name, resolve_device
from stages.models import count_parameters, create_model
from stages.params import Params, TrainParams, load_params


class SpecAugment(torch.nn.Module):
    """One frequency and one time mask per example (masked values set to 0, the feature mean)."""

    def __init__(self, freq_mask: int, time_mask: int):
        super().__init__()
        self.masks = torch.nn.Sequential(
            *([torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True)] if freq_mask else []),
            *([torchaudio.transforms.TimeMasking(time_mask, iid_masks=True)] if time_mask else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.masks(x.unsqueeze(1)).squeeze(1)  # iid masks need a channel dimension


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    if alpha <= 0:
        return x, y
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    perm = torch.randperm(len(x), device=x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def mean_loss(model, loader, device, amp_dtype) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        total += F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum").item() / y.shape[1]
        count += len(x)
    return total / count


def run_fingerprint(params: Params, model_name: str, prepared_dir: Path, features_dir: Path) -> str:
    """What a checkpoint must match to be resumed: the configuration and the data it was made from."""
    digest = hashlib.sha256()
    config = {"lr": params.lr, "seed": params.seed, "train": params.train.__dict__,
              "model": params.models[model_name].__dict__}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for path in (prepared_dir / "targets.npy", prepared_dir / "chunks.csv",
                 features_dir / "index.csv", features_dir / "stats.json"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_resumable(path: Path, fingerprint: str, epochs: int) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint or state["epoch"] >= epochs:
        return None
    return state


def save(obj: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_loaders(tp: TrainParams, prepared_dir: Path, features_dir: Path, device: torch.device):
    stats = read_feature_stats(features_dir)
    features = features_dir / "features.npy"
    pin = device.type == "cuda"
    train_set = ChunkDataset(features, load_split(prepared_dir, features_dir, "train"), stats["mean"], stats["std"])
    valid_set = ChunkDataset(features, load_split(prepared_dir, features_dir, "valid"), stats["mean"], stats["std"])
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=tp.batch_size, shuffle=True,
                                               num_workers=tp.workers, pin_memory=pin)
    valid_loader = torch.utils.data.DataLoader(valid_set, batch_size=tp.batch_size, shuffle=False,
                                               num_workers=tp.workers, pin_memory=pin)
    return train_loader, valid_loader, stats["shape"][1:]


def log_epoch(live: Live, record: dict) -> None:
    for name in ("train_loss", "valid_loss", "lr", "epoch_seconds", "train_samples_per_second"):
        live.log_metric(name, record[name])
    live.next_step()


def train(params: Params, model_name: str, prepared_dir: Path, features_dir: Path, out_dir: Path,
          live_dir: Path) -> dict:
    tp, mp = params.train, params.models[model_name]
    device = resolve_device(tp.device)
    amp_dtype = autocast_dtype(device, tp.amp)
    lr = params.effective_lr(model_name)
    classes = read_classes(prepared_dir)
    train_loader, valid_loader, (n_mels, n_frames) = make_loaders(tp, prepared_dir, features_dir, device)

    torch.manual_seed(params.seed)
    model = create_model(mp.arch, len(classes), n_mels, n_frames, mp.pretrained, mp.options).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # faster convolutions under AMP
    optimizer_class = torch.optim.AdamW if tp.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(model.parameters(), lr=lr, weight_decay=tp.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=tp.epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    augment = SpecAugment(tp.freq_mask, tp.time_mask).to(device)

    fingerprint = run_fingerprint(params, model_name, prepared_dir, features_dir)
    history, best_valid, start_epoch = [], math.inf, 0
    resumed = load_resumable(out_dir / "last.pt", fingerprint, tp.epochs)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        history, best_valid, start_epoch = resumed["history"], resumed["best_valid_loss"], resumed["epoch"]
        print(f"train@{model_name}: resuming after epoch {start_epoch} of {tp.epochs} from {out_dir / 'last.pt'}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if resumed is None:
        # The folder persists between runs: a best.pt of another configuration must not survive.
        (out_dir / "best.pt").unlink(missing_ok=True)

    # A fresh DVCLive directory that replays the epochs already done, so the curves of a resumed
    # run are exactly those of an uninterrupted one.
    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False)
    for record in history:
        log_epoch(live, record)

    for epoch in range(start_epoch, tp.epochs):
        torch.manual_seed(params.seed * 1000 + epoch)  # shuffling, masks, mixup, dropout, patchout
        started = time.perf_counter()
        model.train()
        loss_sum, seen = 0.0, 0
        for x, y in tqdm(train_loader, desc=f"train@{model_name} epoch {epoch + 1}/{tp.epochs}", unit="batch"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x, y = mixup(augment(x), y, tp.mixup_alpha)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item() * len(x)
            seen += len(x)
        train_seconds = time.perf_counter() - started
        valid_loss = mean_loss(model, valid_loader, device, amp_dtype)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "valid_loss": valid_loss,
                  "lr": scheduler.get_last_lr()[0], "epoch_seconds": time.perf_counter() - started,
                  "train_samples_per_second": seen / train_seconds}
        scheduler.step()
        history.append(record)
        log_epoch(live, record)
        if valid_loss < best_valid:
            best_valid = valid_loss
            save({"model": model.state_dict(), "epoch": epoch + 1, "valid_loss": valid_loss}, out_dir / "best.pt")
        save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
              "history": history, "best_valid_loss": best_valid, "fingerprint": fingerprint},
             out_dir / "last.pt")

    total_params, trainable_params = count_parameters(model)
    summary = {
        "effective_lr": lr,
        "epochs": tp.epochs,
        "params_total": total_params,
        "params_trainable": trainable_params,
        "min_train_loss": min(r["train_loss"] for r in history),
        "min_valid_loss": min(r["valid_loss"] for r in history),
        "best_epoch": min(history, key=lambda r: r["valid_loss"])["epoch"],
        "wall_clock_seconds": sum(r["epoch_seconds"] for r in history),
        "mean_epoch_seconds": sum(r["epoch_seconds"] for r in history) / len(history),
        "mean_train_samples_per_second": sum(r["train_samples_per_second"] for r in history) / len(history),
        "peak_memory_mib": peak_memory_mib(device),
        "device": device_name(device),
        "torch_version": torch.__version__,
    }
    live.summary.update(summary)
    live.end()
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    args = parser.parse_args()
    params = load_params(args.params)
    if args.model not in params.models:
        raise SystemExit(f"--model {args.model}: not a key of `models` in {args.params} "
                         f"(have: {', '.join(params.models)})")
    summary = train(params, args.model, args.prepared, args.features, args.out, args.live)
    print(f"train@{args.model}: min valid loss {summary['min_valid_loss']:.4g}, "
          f"{summary['mean_epoch_seconds']:.1f} s/epoch, {summary['params_total']:,} parameters")


if __name__ == "__main__":
    main()

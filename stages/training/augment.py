"""What happens to a batch on the device before the model sees it: a time shift, normalisation,
SpecAugment, mixup (background noise: stages/training/noise.py); and the one-line account of it all."""

from __future__ import annotations

import torch
import torchaudio

from stages.core.params import TrainParams


class Normalise(torch.nn.Module):
    """float16 log-mels -> float32 `(x - mean) / (2 * std)`, the official AST code's scaling."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean = mean
        self.scale = 2 * std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.scale


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


def time_shift(x: torch.Tensor, max_frames: int) -> torch.Tensor:
    """Each example [b, mels, frames] rolled along time by its own draw from [-max_frames, max_frames]
    (circularly, so no frame is lost or invented): where a call sits in the chunk stops being a cue.
    The shifts come from torch's CPU generator, so a run draws the same on any device."""
    if max_frames == 0:
        return x
    frames = x.shape[-1]
    shifts = torch.randint(-max_frames, max_frames + 1, (len(x), 1))
    source = (torch.arange(frames) - shifts) % frames  # [b, frames]: output frame t reads frame t - shift
    return x.gather(2, source.to(x.device)[:, None, :].expand(-1, x.shape[1], -1))


def describe_augmentation(tp: TrainParams) -> str:
    """What training does to its chunks, for the summary: the parts that are on, in order."""
    low, high = tp.background_snr_db
    parts = [
        "every chunk an epoch" if tp.chunks_per_recording == "all"
        else f"{tp.chunks_per_recording} random chunk(s) per recording an epoch",
        f"noise on {tp.background_probability:.0%} at {low:g}-{high:g} dB SNR" if tp.background_probability else "",
        f"noise alone (nocall) {tp.nocall_probability:.0%}" if tp.nocall_probability else "",
        f"shift +-{tp.time_shift_frames} frames" if tp.time_shift_frames else "",
        f"masks {tp.freq_mask} mels / {tp.time_mask} frames" if tp.freq_mask or tp.time_mask else "",
        f"mixup {tp.mixup_alpha:g}" if tp.mixup_alpha else "",
    ]
    return "; ".join(part for part in parts if part)

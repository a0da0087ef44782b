"""What happens to a batch on the device before the model sees it: normalisation, SpecAugment, mixup."""

from __future__ import annotations

import torch
import torchaudio


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

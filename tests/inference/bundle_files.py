"""What the inference tests build: model bundles with random weights (a best.pt and its card, as
stages train and evaluate write them) for 1-second chunks, and small audio folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers import ONE_SECOND_CHUNKS, make_params, tone, write_ogg
from stages.audio.store import FeatureStats
from stages.inference.bundle import Threshold, make_card, read_bundle, write_card
from stages.inference.export import export_onnx
from stages.models.factory import create_model
from stages.training.checkpoints import save

CLASSES = ["amerob", "blujay", "norcar", "rewbla"]
PARAMS = make_params({**ONE_SECOND_CHUNKS, "features.n_mels": 32})
N_FRAMES = PARAMS.features.frames_per_chunk(PARAMS.data.chunk_samples, PARAMS.data.sample_rate)
AST_OPTIONS = dict(make_params().models["ast_tiny"].options)


def make_bundle(folder: Path, arch: str = "efficientnet_b0", classes: list[str] = CLASSES, seed: int = 0,
                threshold: float = 0.5, onnx: bool = False):
    """A bundle of random weights in `folder` (its card written as stage evaluate does); returns it read."""
    torch.manual_seed(seed)
    options = AST_OPTIONS if arch == "ast_tiny" else {}
    model = create_model(arch, len(classes), PARAMS.features.n_mels, N_FRAMES, False, options)
    folder.mkdir(parents=True, exist_ok=True)
    save({"model": model.state_dict(), "epoch": 1, "valid_loss": 0.5, "arch": arch, "classes": list(classes)},
         folder / "best.pt")
    mp = PARAMS.models[arch] if arch in PARAMS.models else PARAMS.models["efficientnet_b0"]
    stats = FeatureStats(-6.0, 3.0, 1, (1, PARAMS.features.n_mels, N_FRAMES))
    card = make_card(folder.name, mp, PARAMS.data, PARAMS.features, stats, list(classes),
                     Threshold(threshold, "a test", None), folder / "best.pt")
    write_card(folder, card)
    bundle = read_bundle(folder)
    if onnx:
        export_onnx(bundle, feature_rows(5))
    return bundle


def feature_rows(count: int, seed: int = 0) -> np.ndarray:
    """Log-mel-like float16 rows for the bundles above."""
    rng = np.random.default_rng(seed)
    return rng.normal(-6.0, 3.0, (count, PARAMS.features.n_mels, N_FRAMES)).astype(np.float16)


def chirps(seconds: float, seed: int, sample_rate: int = 32000) -> np.ndarray:
    """A tone that changes pitch every second: windows that score differently."""
    parts = [tone(1.0, sample_rate, freq=1000 + 700 * ((seed + k) % 9), seed=seed + k) for k in range(int(seconds))]
    rest = tone(seconds - int(seconds), sample_rate, seed=seed) if seconds % 1 else np.zeros(0, np.float32)
    return np.concatenate(parts + [rest]).astype(np.float32)


def write_soundscape(folder: Path, audio_id: int, site: str, seconds: float, seed: int = 0) -> Path:
    return write_ogg(folder / f"{audio_id}_{site}_20210512.ogg", chirps(seconds, seed), serial=audio_id)

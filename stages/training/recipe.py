"""The training recipe of one model on one device (precision, memory format, compilation, batch
size), and the one function that builds a model for a recipe, with or without a checkpoint.

`train.precision: auto` and `train.channels_last: auto` resolve here, per model family (declared in
stages/models/registry.py), to what was measured fastest: on CUDA by the benchmark (`make bench`,
reports/bench.json); on the CPU, fp32 (CPU autocast is slower there) with CNNs in channels-last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from stages.audio.store import FeatureStats
from stages.core.params import ModelParams, TrainParams
from stages.models.factory import create_model
from stages.models.registry import family_of
from stages.training.checkpoints import load_best_weights

# Fastest (precision, channels_last) on CUDA, from one H100, torch 2.11, 128 x 501 input, 397 classes,
# batch 64, training samples/s: EfficientNet-B0 fp32 1,363 against bf16 + channels_last 1,023;
# AST-tiny bf16 1,646 against fp32 839 (channels_last means nothing to a transformer).
CUDA_AUTO = {
    "transformer": ("bf16", False),  # AST
    "cnn": ("fp32", False),          # every timm CNN
}
# On the CPU (2 cores, torch 2.11, batch 8): an EfficientNet-B0 training step took 0.60 s in
# channels-last against 0.82-0.98 s in the default format.
CPU_AUTO = {
    "transformer": ("fp32", False),
    "cnn": ("fp32", True),
}
# On CUDA, always (not yet measured in this pipeline's loop; `make bench` measures each against off):
# cuDNN autotuning, which the CUDA_AUTO figures above were taken with; a fused optimizer (one kernel
# for all parameters instead of a Python loop over them); TF32 tensor cores for fp32 matmuls.
CUDA_ALWAYS = {"cudnn_benchmark": True, "fused_optimizer": True, "tf32": True}
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Recipe:
    precision: str        # fp32 | bf16 | fp16, resolved
    channels_last: bool
    compile: bool
    batch_size: int
    cudnn_benchmark: bool = False
    fused_optimizer: bool = False
    tf32: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES[self.precision]

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_recipe(arch: str, device: torch.device, tp: TrainParams) -> Recipe:
    """The recipe `tp` asks for, with every `auto` decided for `arch` on `device`."""
    auto_precision, auto_channels_last = (CUDA_AUTO if device.type == "cuda" else CPU_AUTO)[family_of(arch)]
    precision = auto_precision if tp.precision == "auto" else tp.precision
    channels_last = auto_channels_last if tp.channels_last == "auto" else bool(tp.channels_last)
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"train.precision: bf16 was asked for but {torch.cuda.get_device_name(device)} "
                         "does not support it; use fp16, fp32 or auto")
    cuda_flags = CUDA_ALWAYS if device.type == "cuda" else {}
    return Recipe(precision, channels_last, tp.compile, tp.batch_size, **cuda_flags)


def apply_backend_flags(recipe: Recipe) -> None:
    """The recipe's process-wide CUDA switches (no effect on the CPU)."""
    torch.backends.cudnn.benchmark = recipe.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = recipe.tf32
    torch.backends.cudnn.allow_tf32 = recipe.tf32


@dataclass(frozen=True)
class RecipeModel:
    model: torch.nn.Module       # whose state_dict is saved and loaded
    step_model: torch.nn.Module  # what a step calls: `model`, or `model` compiled


def model_for_recipe(mp: ModelParams, n_classes: int, stats: FeatureStats, device: torch.device, recipe: Recipe,
                     checkpoint: Path | None = None, classes: list[str] | None = None,
                     sync_batchnorm: bool = False) -> RecipeModel:
    """Model `mp` for the features of `stats`, on `device` in the recipe's memory format.

    Without `checkpoint`: fresh weights (ImageNet ones if `mp.pretrained`), for training. With it:
    the trained weights of that best.pt, refused if written for another architecture or `classes`.
    `sync_batchnorm` (data-parallel CUDA training) makes BatchNorm use the statistics of the whole
    global batch; its state_dict keys are those of plain BatchNorm.
    """
    # A checkpoint already holds trained weights: don't ask for ImageNet weights again.
    pretrained = mp.pretrained if checkpoint is None else False
    model = create_model(mp.arch, n_classes, stats.n_mels, stats.n_frames, pretrained, mp.options)
    if checkpoint is not None:
        load_best_weights(checkpoint, model, mp.arch, classes)
    if sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    return RecipeModel(model, prepare_model(model, recipe))


def prepare_model(model: torch.nn.Module, recipe: Recipe) -> torch.nn.Module:
    """`model` in the recipe's memory format, and the module to call for a step (compiled or not).

    The returned module shares its parameters with `model`: save `model.state_dict()`, whose keys
    carry no `_orig_mod.` prefix.
    """
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)
    # Static shapes: the short last batch and validation's batch get a graph each, instead of
    # everything switching to one slower dynamic-shape graph after the first new size.
    return torch.compile(model, dynamic=False) if recipe.compile else model


def step_context(device: torch.device, recipe: Recipe) -> torch.autocast:
    """Autocast to the recipe's precision (a no-op context for fp32)."""
    dtype = recipe.autocast_dtype
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

"""One factory for every model the pipeline trains: `create_model(arch, ...)`.

Every model takes a normalised log-mel spectrogram [batch, n_mels, n_frames] (no channel
dimension) and returns logits [batch, num_classes]. `arch` is a name of the registry's MODELS (our
own models, each with its builder here) or else any timm model name, built as a 1-channel image CNN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import timm
from torch import Tensor, nn

from stages.models.ast_model import AST, DEIT_TINY
from stages.models.ast_options import ASTOptions
from stages.models.pretrained import (PretrainedWeightsNotFound, adapt_deit_to_ast, find_weights_file,
                                      resolve_pretrained_state_dict)
from stages.models.registry import MODELS, check_arch

__all__ = ["MODEL_BUILDERS", "PretrainedWeightsNotFound", "count_parameters", "create_model"]

# (num_classes, n_mels, n_frames, pretrained, options) -> model
ModelBuilder = Callable[[int, int, int, bool | str, dict[str, Any]], nn.Module]


def build_ast_tiny(num_classes: int, n_mels: int, n_frames: int, pretrained: bool | str,
                   options: dict[str, Any]) -> AST:
    model = AST(num_classes, n_mels, n_frames, ASTOptions.from_dict(options))
    if pretrained:
        deit_state = resolve_pretrained_state_dict(DEIT_TINY, pretrained)
        model.load_state_dict(adapt_deit_to_ast(deit_state, model))
    return model


MODEL_BUILDERS: dict[str, ModelBuilder] = {"ast_tiny": build_ast_tiny}
if MODEL_BUILDERS.keys() != MODELS.keys():  # a registered model with no builder, or the reverse
    raise ImportError(f"stages/models: builders {sorted(MODEL_BUILDERS)} do not match the registry {sorted(MODELS)}")


class SpectrogramCNN(nn.Module):
    """An image CNN fed a spectrogram as a 1-channel image."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, spectrogram: Tensor) -> Tensor:
        return self.backbone(spectrogram.unsqueeze(1))


def build_timm_cnn(arch: str, num_classes: int, pretrained: bool | str,
                   options: dict[str, Any]) -> SpectrogramCNN:
    check_arch(arch)
    weights: dict[str, Any] = {}
    if pretrained:
        # Hand timm one file we found ourselves, so it never looks elsewhere; timm still sums the
        # RGB stem to 1 channel and drops the 1000-class ImageNet classifier.
        weights = {"pretrained": True,
                   "pretrained_cfg_overlay": {"file": str(find_weights_file(arch, pretrained))}}
    try:
        backbone = timm.create_model(arch, in_chans=1, num_classes=num_classes, **weights, **options)
    except TypeError as error:  # how timm reports a keyword the model does not take
        raise ValueError(f"options {sorted(options)} for timm model '{arch}': {error}") from error
    return SpectrogramCNN(backbone)


def create_model(arch: str, num_classes: int, n_mels: int, n_frames: int,
                 pretrained: bool | str = False, options: dict[str, Any] | None = None) -> nn.Module:
    """Build model `arch` for [batch, n_mels, n_frames] spectrograms and `num_classes` outputs.

    pretrained: False for random weights, True for timm's ImageNet weights from the Hugging Face
    cache (or the network where there is one), or the path of a local ImageNet checkpoint.
    Weights asked for but not found raise PretrainedWeightsNotFound, never a random-weight model.
    options: model-specific settings (ASTOptions for AST, timm.create_model keywords for a CNN).
    """
    options = dict(options or {})
    builder = MODEL_BUILDERS.get(arch)
    if builder is not None:
        return builder(num_classes, n_mels, n_frames, pretrained, options)
    return build_timm_cnn(arch, num_classes, pretrained, options)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) number of parameters."""
    parameters = list(model.parameters())
    return (sum(p.numel() for p in parameters),
            sum(p.numel() for p in parameters if p.requires_grad))

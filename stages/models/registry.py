"""What the pipeline knows about a model before building it: its family and how its options parse.

`arch` in params.yaml is a name of MODELS (a model of our own) or any timm model name (an image CNN
fed the spectrogram as a 1-channel image). The family decides the training recipe (precision,
memory format) in stages/training/recipe.py; the options parser lets params.yaml be checked when it
is loaded, before any stage runs. No torch here, so that every stage can validate its params without
importing a model; stages/models/factory.py holds the builders, one per MODELS name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from stages.models.ast_options import parse_ast_options

Family = Literal["transformer", "cnn"]
TIMM_FAMILY: Family = "cnn"  # every arch that is not in MODELS is built by timm as a CNN


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    # (options from params.yaml, n_mels, n_frames) -> parsed options; raises OptionError
    parse_options: Callable[[dict[str, Any], int, int], Any]


MODELS: dict[str, ModelSpec] = {
    "ast_tiny": ModelSpec("transformer", parse_ast_options),
}


class UnknownArch(ValueError):
    """`arch` is neither a name of MODELS nor a timm model."""


def check_arch(arch: str) -> None:
    import timm  # only here: a registered name needs no torch

    if arch not in MODELS and not timm.is_model(arch):
        raise UnknownArch(f"Unknown model arch '{arch}': expected one of {sorted(MODELS)} or any timm model "
                          "name (see timm.list_models())")


def family_of(arch: str) -> Family:
    spec = MODELS.get(arch)
    return spec.family if spec is not None else TIMM_FAMILY

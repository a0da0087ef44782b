"""AST's knobs (`models.<name>.options` in params.yaml), checked when params.yaml is loaded.

Kept apart from the model (no torch here) so that params validation can parse them before any
stage runs: a bad `patch_time` stops `dvc repro` before `demo_data`, not after featurize.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

POS_EMBED_INTERPOLATIONS = ("bilinear", "nearest", "reinit")
POS_EMBED_INITS = ("trunc_normal", "sincos")


class OptionError(ValueError):
    """One model option is unknown or out of range; `key` names it, `message` says what is allowed."""

    def __init__(self, key: str, message: str):
        super().__init__(f"AST option {key}: {message}")
        self.key, self.message = key, message


@dataclass(frozen=True)
class ASTOptions:
    """The defaults are the paper's."""
    patch_freq: int = 16
    patch_time: int = 16
    fstride: int = 10
    tstride: int = 10
    patchout_freq: float = 0.0      # fraction of frequency rows of patches dropped in training
    patchout_time: float = 0.0      # fraction of time columns of patches dropped in training
    pos_embed_interp: str = "bilinear"  # how ImageNet position embeddings are stretched
    pos_embed_init: str = "trunc_normal"  # without ImageNet weights: trunc_normal | sincos

    def __post_init__(self) -> None:
        for key in ("patch_freq", "patch_time", "fstride", "tstride"):
            value = getattr(self, key)
            # bool is an int in Python, but `patch_freq: true` is surely a typo.
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise OptionError(key, f"must be a positive integer, got {value!r}")
        for key in ("patchout_freq", "patchout_time"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise OptionError(key, f"must be a number in [0, 1), got {value!r}")
        for key, allowed in (("pos_embed_interp", POS_EMBED_INTERPOLATIONS), ("pos_embed_init", POS_EMBED_INITS)):
            if getattr(self, key) not in allowed:
                raise OptionError(key, f"must be one of {list(allowed)}, got {getattr(self, key)!r}")

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> ASTOptions:
        options = dict(options or {})
        allowed = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise OptionError(unknown[0], f"unknown option (allowed: {', '.join(allowed)})")
        return cls(**options)


def patch_grid_size(n_mels: int, n_frames: int, options: ASTOptions) -> tuple[int, int]:
    """(frequency, time) number of patches the convolution produces for an n_mels x n_frames input."""
    for key, patch, size, axis in (("patch_freq", options.patch_freq, n_mels, "mel bins"),
                                   ("patch_time", options.patch_time, n_frames, "frames")):
        if patch > size:
            raise OptionError(key, f"AST patches of {options.patch_freq} x {options.patch_time} do not fit "
                                   f"a {n_mels} x {n_frames} spectrogram ({patch} > {size} {axis})")
    return ((n_mels - options.patch_freq) // options.fstride + 1,
            (n_frames - options.patch_time) // options.tstride + 1)


def parse_ast_options(options: dict[str, Any] | None, n_mels: int, n_frames: int) -> ASTOptions:
    """The options of an AST for n_mels x n_frames spectrograms, or OptionError naming the key."""
    parsed = ASTOptions.from_dict(options)
    patch_grid_size(n_mels, n_frames, parsed)
    return parsed

"""ImageNet weights: finding them without a network, and fitting DeiT's to AST.

Weights come from a local file (`pretrained: /path` in params.yaml) or from the Hugging Face cache
that timm downloads into (`pretrained: true`). A missing file is an error, never a silent fallback
to random weights: a "pretrained" run that is not would quietly answer a different question.

AST (Gong et al., 2021) moves DeiT's weights from 224 x 224 RGB images to 1-channel spectrograms in
three steps, each a small pure function below: sum the RGB patch kernel to one channel, keep the
CLS/distillation tokens, and fit the 14 x 14 grid of position embeddings to the spectrogram's
(frequency x time) patch grid. Everything else is copied unchanged; the classifier head is new.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import huggingface_hub
import timm.models
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import LocalEntryNotFoundError
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models import adapt_input_conv, get_pretrained_cfg
from torch import Tensor

from stages.models.ast_model import AST
from stages.models.ast_options import POS_EMBED_INTERPOLATIONS

HUB_WEIGHTS_FILENAME = "model.safetensors"
HUB_PROBE_SECONDS = 3
HTTPS_PORT = 443
# DeiT's classifiers (class token head, distillation token head): AST replaces both with its own.
DEIT_HEAD_PREFIXES = ("head.", "head_dist.")


class PretrainedWeightsNotFound(FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine; the message says how to fix it."""


def _how_to_provide(timm_name: str) -> str:
    return (f"To provide them: on a machine with network, run `python -c \"import timm, torch; "
            f"m = timm.create_model('{timm_name}', pretrained=True); "
            f"torch.save(m.state_dict(), '{timm_name}.pth')\"`, copy the file here and set "
            f"`pretrained: /path/to/{timm_name}.pth` for this model in params.yaml (or copy that "
            f"machine's Hugging Face cache here and keep `pretrained: true`).")


def find_weights_file(timm_name: str, pretrained: Literal[True] | str) -> Path:
    """The checkpoint to load: a path given in params.yaml, or timm's file in the Hugging Face cache."""
    if pretrained is True:
        return find_hub_weights_file(timm_name)
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsNotFound(
            f"No pretrained weights file for '{timm_name}' at {path}. " + _how_to_provide(timm_name))
    return path


def hub_reachable() -> bool:
    """Whether a download could start at all: not in offline mode, and the Hub's host accepts a
    connection within HUB_PROBE_SECONDS."""
    if hub_constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(hub_constants.ENDPOINT).hostname
    try:
        with socket.create_connection((host, HTTPS_PORT), timeout=HUB_PROBE_SECONDS):
            return True
    except OSError:  # no DNS, no route, refused, timed out
        return False


def find_hub_weights_file(timm_name: str) -> Path:
    """timm's ImageNet weights for `timm_name`: from the Hugging Face cache, or downloaded if online."""
    cfg = get_pretrained_cfg(timm_name)
    repo_id = cfg.hf_hub_id if cfg else None
    if not repo_id:
        raise PretrainedWeightsNotFound(
            f"timm lists no Hugging Face Hub weights for '{timm_name}'. " + _how_to_provide(timm_name))
    try:
        # The cache first: an online call asks the Hub whether the cached file is current, which
        # fails or hangs without network even when the weights are right here.
        return Path(huggingface_hub.hf_hub_download(
            repo_id, HUB_WEIGHTS_FILENAME, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not hub_reachable():  # stop now, not after huggingface_hub's retries (about half a minute)
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for '{timm_name}' ({HUB_WEIGHTS_FILENAME} of Hugging Face repo {repo_id}) are "
            f"not in the Hugging Face cache {hub_constants.HF_HUB_CACHE}, and the Hub cannot be reached from "
            "this machine (offline, or HF_HUB_OFFLINE is set). " + _how_to_provide(timm_name))
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, HUB_WEIGHTS_FILENAME))
    except Exception as error:  # offline mode, no network, HTTP errors: all mean "not available"
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for '{timm_name}' ({HUB_WEIGHTS_FILENAME} of Hugging Face repo "
            f"{repo_id}) are not in the Hugging Face cache {hub_constants.HF_HUB_CACHE} "
            f"and could not be downloaded ({type(error).__name__}: {error}). "
            + _how_to_provide(timm_name)) from error


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint (.safetensors, or .pth/.pt/.bin saved by torch) as a state dict.

    timm's reader unwraps training checkpoints ({'state_dict': ...} or {'model': ...}) and strips
    DDP / torch.compile key prefixes.
    """
    path = Path(path)
    if not path.is_file():  # timm's own error is a bare FileNotFoundError with no message
        raise PretrainedWeightsNotFound(f"No checkpoint file at {path}")
    try:
        # weights_only: a .pth file can run arbitrary code when unpickled; weights cannot.
        # use_ema=False: the weights as trained, not an EMA copy a training checkpoint may also hold.
        checkpoint = timm.models.load_state_dict(str(path), use_ema=False, device="cpu",
                                                 weights_only=True)
    except AttributeError as error:  # timm calls .items() on whatever the file holds
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)") from error
    if not isinstance(checkpoint, dict) or not all(
            isinstance(value, Tensor) for value in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return checkpoint


def resolve_pretrained_state_dict(timm_name: str, pretrained: Literal[True] | str) -> dict[str, Tensor]:
    """The ImageNet state dict of `timm_name`, from a local path or the Hugging Face cache."""
    return load_state_dict_file(find_weights_file(timm_name, pretrained))


def rgb_kernel_to_mono(weight: Tensor) -> Tensor:
    """[out, 3, kh, kw] RGB convolution kernel -> [out, 1, kh, kw] kernel for 1-channel input.

    The paper says the three channels are averaged, but the official AST code sums them, as does
    timm for 1-channel CNN stems. Summing keeps the layer's response to a grey image (R = G = B = x
    gives exactly what the mono kernel gives for x); averaging would shrink every activation the
    following, unchanged layers see by a factor of 3.
    """
    # timm would quietly pass a 1-channel kernel through, or fold a 6- or 12-channel one as a
    # space-to-depth stem: neither is DeiT's patch kernel, so say so instead.
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected an RGB kernel [out, 3, kh, kw], got shape {tuple(weight.shape)}")
    return adapt_input_conv(1, weight)


def fit_patch_kernel(rgb_weight: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """DeiT's RGB patch kernel as a 1-channel kernel of the AST patch size (e.g. 16 x 16 -> 32 x 4)."""
    mono = rgb_kernel_to_mono(rgb_weight)
    if tuple(mono.shape[-2:]) == tuple(patch_size):
        return mono
    # FlexiViT's resampling keeps the kernel's response to resized patches, unlike plain
    # interpolation of the kernel.
    return resample_patch_embed(mono, list(patch_size))


def fit_pos_embed_grid(grid: Tensor, target_hw: tuple[int, int], mode: str) -> Tensor:
    """Fit a [1, dim, H, W] grid of position embeddings to [1, dim, h, w], axis by axis (AST).

    An axis that gets shorter keeps its centre slice; one that gets longer is interpolated
    ('bilinear' or 'nearest'). 'reinit' discards the ImageNet embeddings for fresh random ones,
    the baseline the paper found worse.
    """
    if mode not in POS_EMBED_INTERPOLATIONS:
        raise ValueError(f"pos_embed mode must be one of {list(POS_EMBED_INTERPOLATIONS)}, got {mode!r}")
    if mode == "reinit":
        return torch.nn.init.trunc_normal_(grid.new_empty(1, grid.shape[1], *target_hw), std=0.02)
    height, width = target_hw
    # Time first, then frequency, as the official code; the two steps commute.
    fitted = _fit_axis(grid, axis=3, target=width, mode=mode)
    fitted = _fit_axis(fitted, axis=2, target=height, mode=mode)
    return fitted.clone()


def _fit_axis(grid: Tensor, axis: int, target: int, mode: str) -> Tensor:
    source = grid.shape[axis]
    if target <= source:
        # The official AST start, `14 // 2 - n // 2`: on DeiT's even 14 and an odd n it is one later
        # than (14 - n) // 2. timm's resampler only interpolates, so the slice stays ours.
        return grid.narrow(axis, source // 2 - target // 2, target)
    size = list(grid.shape[2:])
    size[axis - 2] = target  # the other axis keeps its size, so it is left exactly as it is
    return _resample_grid(grid, size, mode)


def _resample_grid(grid: Tensor, size: list[int], mode: str) -> Tensor:
    """timm's position-embedding resampler on a [1, dim, H, W] grid (it takes [1, H*W, dim] tokens).

    antialias=False: timm's default True is an error for 'nearest' and, for upsampling, a different
    bilinear kernel that differs from plain interpolation by rounding. One axis per call, as the
    official AST does: one 2-D pass over both axes is not bit-identical to two 1-D passes.
    """
    dim = grid.shape[1]
    tokens = grid.flatten(2).transpose(1, 2)
    resized = resample_abs_pos_embed(tokens, size, old_size=list(grid.shape[2:]),
                                     num_prefix_tokens=0, interpolation=mode, antialias=False)
    return resized.transpose(1, 2).reshape(1, dim, *size)


def fit_pos_embed(deit_pos_embed: Tensor, grid_size: tuple[int, int], mode: str,
                  num_prefix_tokens: int = 2) -> Tensor:
    """DeiT's [1, 2 + S*S, dim] position embeddings -> AST's [1, 2 + f*t, dim].

    The CLS and distillation positions are kept exactly; the S x S patch grid is fitted.
    """
    prefix = deit_pos_embed[:, :num_prefix_tokens]
    patches = deit_pos_embed[:, num_prefix_tokens:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ValueError(f"DeiT position embeddings of shape {tuple(deit_pos_embed.shape)} do not "
                         f"hold a square patch grid after {num_prefix_tokens} token positions")
    grid = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    fitted = fit_pos_embed_grid(grid, grid_size, mode)
    return torch.cat([prefix, fitted.flatten(2).transpose(1, 2)], dim=1)


def adapt_deit_to_ast(deit_state: dict[str, Tensor], ast_model: AST) -> dict[str, Tensor]:
    """A state dict for `ast_model` made of ImageNet DeiT weights, ready for a strict load.

    The head keeps `ast_model`'s fresh initialisation; DeiT's two heads are dropped.
    """
    target = ast_model.state_dict()
    _check_deit_keys(deit_state, target)
    options = ast_model.options
    adapted = {}
    for key, fresh in target.items():
        if key.startswith("head."):
            adapted[key] = fresh
        elif key == "patch_embed.proj.weight":
            adapted[key] = fit_patch_kernel(deit_state[key], (options.patch_freq, options.patch_time))
        elif key == "pos_embed":
            adapted[key] = fit_pos_embed(deit_state[key], ast_model.grid_size,
                                         options.pos_embed_interp, ast_model.num_prefix_tokens)
        else:
            adapted[key] = deit_state[key]
        if adapted[key].shape != fresh.shape:
            raise ValueError(f"pretrained '{key}' has shape {tuple(deit_state[key].shape)}, which "
                             f"does not fit AST's {tuple(fresh.shape)}: is it a DeiT-tiny checkpoint?")
    return adapted


def _check_deit_keys(deit_state: dict[str, Tensor], target: dict[str, Tensor]) -> None:
    missing = sorted(key for key in target if not key.startswith("head.") and key not in deit_state)
    unexpected = sorted(key for key in deit_state
                        if key not in target and not key.startswith(DEIT_HEAD_PREFIXES))
    if missing or unexpected:
        raise ValueError(f"pretrained weights do not match AST's DeiT backbone: missing keys "
                         f"{_first_few(missing)}, unexpected keys {_first_few(unexpected)}")


def _first_few(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"

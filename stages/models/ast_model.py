"""AST: the Audio Spectrogram Transformer (Gong, Chung & Glass, Interspeech 2021) on DeiT-tiny.

A log-mel spectrogram is cut into overlapping patches, each patch becomes a token, and a DeiT
transformer (CLS and distillation tokens included) classifies the sequence. Optionally, PaSST's
structured patchout (Koutini et al., 2021) drops whole rows and columns of patches during training.

Without ImageNet weights, the patch position embeddings can start as the official code's small
random values (`trunc_normal`, std 0.02) or as a fixed 2-D sine-cosine code (`sincos`, as MAE and
Audio-MAE do); both are trained. The random ones are about 12 times smaller than a patch's
embedding (standard deviations on the demo's features), so a patch's frequency, which is what tells
many bird species apart, is all but invisible at the start; from random weights on the demo, 16x16
patches learn with `sincos` and stay at chance with `trunc_normal` (reports/ablations.md).
"""

from __future__ import annotations

import timm
import torch
from torch import Tensor, nn

from stages.models.ast_options import ASTOptions, patch_grid_size

DEIT_TINY = "deit_tiny_distilled_patch16_224"
SINCOS_MAX_PERIOD = 10000.0  # the longest wavelength's scale, as in "Attention is all you need"


def sincos_1d(n_positions: int, dim: int) -> Tensor:
    """[n_positions, dim]: sines then cosines of each position at dim / 2 geometric frequencies."""
    positions = torch.arange(n_positions, dtype=torch.float64)[:, None]
    frequencies = SINCOS_MAX_PERIOD ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_2d(grid_size: tuple[int, int], dim: int) -> Tensor:
    """[f * t, dim] position codes of a row-major f x t patch grid: the first half of the channels
    encodes the frequency row, the second half the time column (MAE's 2-D sine-cosine code)."""
    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine position code needs an embedding size divisible by 4, got {dim}")
    n_freq, n_time = grid_size
    freq_code = sincos_1d(n_freq, dim // 2)[:, None, :].expand(n_freq, n_time, dim // 2)
    time_code = sincos_1d(n_time, dim // 2)[None, :, :].expand(n_freq, n_time, dim // 2)
    return torch.cat([freq_code, time_code], dim=2).reshape(n_freq * n_time, dim).float()


def structured_patchout(grid: Tensor, drop_freq: float, drop_time: float) -> Tensor:
    """Drop random whole frequency rows and time columns of a [batch, f, t, dim] patch grid.

    The same rows and columns go for the whole batch, so what is left is a smaller dense grid: the
    transformer really runs on fewer tokens, which is where PaSST's training speed-up comes from.
    Which patches were dropped needs no bookkeeping: position embeddings are already added.
    """
    kept_rows = _random_kept_indices(grid.shape[1], drop_freq, grid.device)
    kept_cols = _random_kept_indices(grid.shape[2], drop_time, grid.device)
    return grid[:, kept_rows][:, :, kept_cols]


def _random_kept_indices(size: int, drop_fraction: float, device: torch.device) -> Tensor:
    n_kept = size - int(size * drop_fraction)  # drop_fraction < 1 keeps at least one
    return torch.randperm(size, device=device)[:n_kept]


class OverlappingPatchEmbed(nn.Module):
    """Projects (possibly overlapping) patches of a 1-channel spectrogram to embedding vectors.

    timm's PatchEmbed has no stride argument, and AST's patches overlap (stride 10 < size 16).
    """

    def __init__(self, patch_size: tuple[int, int], stride: tuple[int, int], embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, image: Tensor) -> Tensor:
        """[batch, 1, n_mels, n_frames] -> patch grid [batch, f, t, embed_dim]."""
        return self.proj(image).permute(0, 2, 3, 1)


class AST(nn.Module):
    """Audio Spectrogram Transformer: [batch, n_mels, n_frames] -> logits [batch, num_classes].

    Parameter names follow timm's DeiT (patch_embed.proj, cls_token, dist_token, pos_embed,
    blocks, norm), so ImageNet weights map onto it key by key (see stages/models/pretrained.py).
    """

    def __init__(self, num_classes: int, n_mels: int, n_frames: int,
                 options: ASTOptions | None = None):
        super().__init__()
        options = options or ASTOptions()
        self.options = options
        self.grid_size = patch_grid_size(n_mels, n_frames, options)
        # Borrow DeiT-tiny's transformer; its 1000-class heads are not kept, so the parameters
        # counted and trained are exactly this model's.
        deit = timm.create_model(DEIT_TINY, pretrained=False, num_classes=0)
        embed_dim = deit.embed_dim
        self.num_prefix_tokens = deit.num_prefix_tokens  # CLS and distillation tokens
        self.patch_embed = OverlappingPatchEmbed(
            (options.patch_freq, options.patch_time), (options.fstride, options.tstride), embed_dim)
        self.cls_token = deit.cls_token
        self.dist_token = deit.dist_token
        n_patches = self.grid_size[0] * self.grid_size[1]
        pos_embed = nn.init.trunc_normal_(torch.empty(1, self.num_prefix_tokens + n_patches, embed_dim), std=0.02)
        if options.pos_embed_init == "sincos":
            pos_embed[0, self.num_prefix_tokens:] = sincos_pos_embed_2d(self.grid_size, embed_dim)
        self.pos_embed = nn.Parameter(pos_embed)
        self.pos_drop = deit.pos_drop
        self.blocks = deit.blocks
        self.norm = deit.norm
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, num_classes))

    def embed(self, spectrogram: Tensor) -> Tensor:
        """Tokens entering the transformer blocks: [batch, 2 + patches kept, embed_dim]."""
        grid = self.patch_embed(spectrogram.unsqueeze(1))
        if tuple(grid.shape[1:3]) != self.grid_size:
            raise ValueError(f"AST built for a {self.grid_size} patch grid got an input of shape "
                             f"{tuple(spectrogram.shape)}, which gives {tuple(grid.shape[1:3])}")
        patch_pos = self.pos_embed[:, self.num_prefix_tokens:]
        grid = grid + patch_pos.view(1, *self.grid_size, -1)
        if self.training and (self.options.patchout_freq > 0 or self.options.patchout_time > 0):
            grid = structured_patchout(grid, self.options.patchout_freq, self.options.patchout_time)
        patches = grid.flatten(1, 2)
        prefix = torch.cat([self.cls_token, self.dist_token], dim=1)
        prefix = prefix + self.pos_embed[:, :self.num_prefix_tokens]
        prefix = prefix.expand(patches.shape[0], -1, -1)
        return self.pos_drop(torch.cat([prefix, patches], dim=1))

    def forward(self, spectrogram: Tensor) -> Tensor:
        tokens = self.norm(self.blocks(self.embed(spectrogram)))
        # As in AST (and DeiT at inference), average the CLS and distillation token outputs.
        pooled = (tokens[:, 0] + tokens[:, 1]) / 2
        return self.head(pooled)

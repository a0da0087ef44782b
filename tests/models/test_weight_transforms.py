"""The pure functions of the ImageNet -> AST weight transfer (stages/models/pretrained.py): the RGB
patch kernel summed to one channel, and the position-embedding grid fitted axis by axis (the centre
slice of a shorter axis, where the official AST code takes it; interpolation of a longer one;
nearest and re-initialised variants)."""

from __future__ import annotations


import pytest
import torch

from stages.models.pretrained import fit_pos_embed_grid, rgb_kernel_to_mono

DEIT_GRID = 14  # DeiT's 224 x 224 image in 16 x 16 patches


def test_rgb_kernel_to_mono_sums_channels():
    weight = torch.randn(4, 3, 2, 2)
    mono = rgb_kernel_to_mono(weight)
    assert mono.shape == (4, 1, 2, 2)
    torch.testing.assert_close(mono[:, 0], weight[:, 0] + weight[:, 1] + weight[:, 2])


def test_rgb_kernel_to_mono_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        rgb_kernel_to_mono(torch.randn(4, 1, 2, 2))


def ramp_grid(height: int, width: int) -> torch.Tensor:
    """[1, 1, height, width] with value 10 * row + column."""
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(width, dtype=torch.float32).view(1, -1)
    return (10 * rows + cols).view(1, 1, height, width)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_fit_grid_keeps_centre_slice_of_shorter_axes(mode):
    grid = ramp_grid(6, 7)
    fitted = fit_pos_embed_grid(grid, (4, 3), mode)
    assert torch.equal(fitted, grid[:, :, 1:5, 2:5])  # starts (6 - 4) // 2 and (7 - 3) // 2


@pytest.mark.parametrize("height, width", [(13, 12), (12, 11), (11, 10), (1, 2)])
def test_centre_slice_starts_where_the_official_ast_does(height, width):
    """AST's code slices 14 -> n from 14 // 2 - n // 2: for odd n one later than (14 - n) // 2."""
    grid = ramp_grid(DEIT_GRID, DEIT_GRID)
    top, left = DEIT_GRID // 2 - height // 2, DEIT_GRID // 2 - width // 2
    fitted = fit_pos_embed_grid(grid, (height, width), "bilinear")
    assert torch.equal(fitted, grid[:, :, top:top + height, left:left + width])


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_fit_grid_same_size_is_identity(mode):
    grid = torch.randn(1, 3, 5, 4)
    assert torch.equal(fit_pos_embed_grid(grid, (5, 4), mode), grid)


def test_fit_grid_interpolates_longer_axis_bilinear():
    grid = ramp_grid(1, 3)  # 0, 1, 2
    fitted = fit_pos_embed_grid(grid, (1, 6), "bilinear")
    # align_corners=False: output pixel centres map to -0.25, 0.25, ..., 2.25, clamped at the edges
    expected = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.0]).view(1, 1, 1, 6)
    torch.testing.assert_close(fitted, expected)


def test_fit_grid_slices_one_axis_and_interpolates_the_other():
    grid = ramp_grid(5, 3)
    fitted = fit_pos_embed_grid(grid, (3, 6), "bilinear")
    time_part = torch.tensor([0.0, 0.25, 0.75, 1.25, 1.75, 2.0])
    expected = 10 * torch.tensor([1.0, 2.0, 3.0]).view(-1, 1) + time_part.view(1, -1)
    torch.testing.assert_close(fitted[0, 0], expected)


def test_fit_grid_nearest_only_repeats_source_values():
    grid = torch.randn(1, 2, 4, 4)
    fitted = fit_pos_embed_grid(grid, (9, 11), "nearest")
    assert fitted.shape == (1, 2, 9, 11)
    assert torch.isin(fitted, grid).all()


def test_fit_grid_reinit_is_fresh_small_noise():
    grid = torch.rand(1, 192, 14, 14) + 1  # out of the new embeddings' range: no match by chance
    fitted = fit_pos_embed_grid(grid, (12, 49), "reinit")
    assert fitted.shape == (1, 192, 12, 49)
    assert not torch.isin(fitted, grid).any()
    assert 0.015 < fitted.std().item() < 0.025


def test_fit_grid_rejects_unknown_mode():
    with pytest.raises(ValueError, match="bicubic"):
        fit_pos_embed_grid(torch.zeros(1, 1, 2, 2), (3, 3), "bicubic")



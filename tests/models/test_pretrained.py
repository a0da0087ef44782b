"""ImageNet weight loading and the DeiT -> AST transfer, on randomly initialised timm weights.

Nothing is downloaded: "ImageNet" checkpoints are random timm models saved to temporary files,
and the Hugging Face cache is a temporary folder in the layout huggingface_hub reads.
"""

import shutil
from pathlib import Path

import huggingface_hub.constants
from huggingface_hub.errors import LocalEntryNotFoundError
import pytest
import safetensors.torch
import timm
import torch

from stages.models.ast_model import AST, DEIT_TINY
from stages.models.ast_options import ASTOptions
from stages.models.factory import create_model
from stages.models.pretrained import (PretrainedWeightsNotFound, adapt_deit_to_ast, find_hub_weights_file,
                                      load_state_dict_file, resolve_pretrained_state_dict)

DEIT_GRID = 14  # DeiT's 224 x 224 image in 16 x 16 patches


@pytest.fixture(scope="module")
def deit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(DEIT_TINY, pretrained=False).state_dict()


@pytest.fixture(scope="module")
def deit_files(deit_state, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("deit")
    torch.save(deit_state, folder / "deit.pth")
    safetensors.torch.save_file(deit_state, folder / "deit.safetensors")
    return {"pth": folder / "deit.pth", "safetensors": folder / "deit.safetensors"}


@pytest.fixture
def hub_cache(monkeypatch, tmp_path) -> Path:
    """An empty, offline Hugging Face cache. huggingface_hub reads its environment variables once,
    at import, so its constants are patched as well."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def put_in_hub_cache(cache: Path, repo_id: str, weights_file: Path) -> None:
    """Place a file as huggingface_hub caches a download of `repo_id`'s model.safetensors."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(weights_file, repo / "snapshots" / commit / "model.safetensors")


def with_pos_grid(deit_state: dict, grid: torch.Tensor) -> dict:
    """A copy of `deit_state` whose 14 x 14 patch position embeddings are `grid` [1, dim, 14, 14]."""
    state = dict(deit_state)
    prefix = deit_state["pos_embed"][:, :2]
    state["pos_embed"] = torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)
    return state


def patch_pos_grid(pos_embed: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """AST's patch position embeddings as a [1, dim, f, t] grid."""
    return pos_embed[:, 2:].reshape(1, *grid_size, -1).permute(0, 3, 1, 2)


def adapted_pos_grid(deit_state: dict, grid: torch.Tensor, n_frames: int = 500,
                     mode: str = "bilinear") -> torch.Tensor:
    model = AST(5, 128, n_frames, ASTOptions(pos_embed_interp=mode))
    adapted = adapt_deit_to_ast(with_pos_grid(deit_state, grid), model)
    return patch_pos_grid(adapted["pos_embed"], model.grid_size)


# --- loading files ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_load_state_dict_file_reads_both_formats(deit_state, deit_files, kind):
    loaded = load_state_dict_file(deit_files[kind])
    assert loaded.keys() == deit_state.keys()
    assert all(torch.equal(loaded[key], deit_state[key]) for key in deit_state)


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_load_state_dict_file_unwraps_training_checkpoints(tmp_path, wrapper):
    state = {"weight": torch.randn(3, 2)}
    torch.save({wrapper: state, "epoch": torch.tensor(7)}, tmp_path / "checkpoint.pt")
    loaded = load_state_dict_file(tmp_path / "checkpoint.pt")
    assert loaded.keys() == {"weight"}
    assert torch.equal(loaded["weight"], state["weight"])


def test_load_state_dict_file_rejects_other_content(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state dict"):
        load_state_dict_file(tmp_path / "list.pt")


def test_missing_local_file_says_where_it_looked(tmp_path):
    path = tmp_path / "nowhere" / "deit.pth"
    with pytest.raises(PretrainedWeightsNotFound, match=str(path)) as caught:
        resolve_pretrained_state_dict(DEIT_TINY, str(path))
    assert isinstance(caught.value, FileNotFoundError)
    assert "params.yaml" in str(caught.value)


# --- the Hugging Face cache ------------------------------------------------------------------

def test_hub_weights_missing_offline_names_repo_and_cache(hub_cache):
    with pytest.raises(PretrainedWeightsNotFound) as caught:
        find_hub_weights_file(DEIT_TINY)
    message = str(caught.value)
    assert "timm/deit_tiny_distilled_patch16_224.fb_in1k" in message
    assert str(hub_cache) in message
    assert "pretrained: /path/to/" in message


def test_weights_missing_with_no_network_fail_at_once_without_retries(hub_cache, monkeypatch):
    """Not in offline mode, but no route to the Hub: the probe says so before huggingface_hub's
    download retries (which took about 28 s here) start."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")
    def hf_hub_download(*args, local_files_only=False, **kwargs):
        if not local_files_only:
            raise AssertionError("no download may be tried")
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    with pytest.raises(PretrainedWeightsNotFound, match="the Hub cannot be reached from this machine"):
        find_hub_weights_file(DEIT_TINY)


def test_hub_weights_found_in_cache(hub_cache, deit_state, deit_files):
    put_in_hub_cache(hub_cache, "timm/deit_tiny_distilled_patch16_224.fb_in1k",
                     deit_files["safetensors"])
    found = find_hub_weights_file(DEIT_TINY)
    assert found.is_relative_to(hub_cache)
    loaded = resolve_pretrained_state_dict(DEIT_TINY, True)
    assert torch.equal(loaded["cls_token"], deit_state["cls_token"])


def test_ast_pretrained_true_loads_from_cache(hub_cache, deit_state, deit_files):
    put_in_hub_cache(hub_cache, "timm/deit_tiny_distilled_patch16_224.fb_in1k",
                     deit_files["safetensors"])
    model = create_model("ast_tiny", 7, 128, 500, pretrained=True)
    assert torch.equal(model.dist_token, deit_state["dist_token"])


def test_cnn_pretrained_true_loads_from_cache(hub_cache, tmp_path):
    imagenet_state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()
    safetensors.torch.save_file(imagenet_state, tmp_path / "effnet.safetensors")
    put_in_hub_cache(hub_cache, "timm/efficientnet_b0.ra_in1k", tmp_path / "effnet.safetensors")
    model = create_model("efficientnet_b0", 7, 128, 500, pretrained=True)
    torch.testing.assert_close(model.backbone.conv_stem.weight,
                               imagenet_state["conv_stem.weight"].sum(dim=1, keepdim=True))


# --- DeiT -> AST -----------------------------------------------------------------------------

def test_adapted_weights_load_strictly_and_copy_the_backbone(deit_state, deit_files):
    model = AST(9, 128, 500)
    head_before = {key: value.clone() for key, value in model.head.state_dict().items()}
    model.load_state_dict(adapt_deit_to_ast(load_state_dict_file(deit_files["pth"]), model))

    torch.testing.assert_close(model.patch_embed.proj.weight,
                               deit_state["patch_embed.proj.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(model.patch_embed.proj.bias, deit_state["patch_embed.proj.bias"])
    assert torch.equal(model.cls_token, deit_state["cls_token"])
    assert torch.equal(model.dist_token, deit_state["dist_token"])
    assert torch.equal(model.pos_embed[:, :2], deit_state["pos_embed"][:, :2])
    assert torch.equal(model.blocks[5].attn.qkv.weight, deit_state["blocks.5.attn.qkv.weight"])
    assert torch.equal(model.norm.weight, deit_state["norm.weight"])
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, head_before[key]), f"head.{key} was overwritten"


def test_frequency_axis_keeps_centre_rows_exactly(deit_state):
    rows = torch.arange(DEIT_GRID, dtype=torch.float32).view(1, 1, -1, 1)
    grid = rows.expand(1, 192, DEIT_GRID, DEIT_GRID).contiguous()
    fitted = adapted_pos_grid(deit_state, grid)  # 14 -> 12 rows, 14 -> 49 columns
    expected_rows = torch.arange(1, 13, dtype=torch.float32).view(1, 1, -1, 1)
    assert torch.equal(fitted, expected_rows.expand_as(fitted))


def test_shorter_grid_is_the_exact_centre_crop(deit_state):
    grid = torch.randn(1, 192, DEIT_GRID, DEIT_GRID)
    fitted = adapted_pos_grid(deit_state, grid, n_frames=106)  # 12 x 10 patches
    assert torch.equal(fitted, grid[:, :, 1:13, 2:12])


def test_constant_position_embedding_stays_constant(deit_state):
    fitted = adapted_pos_grid(deit_state, torch.full((1, 192, DEIT_GRID, DEIT_GRID), 0.3))
    torch.testing.assert_close(fitted, torch.full_like(fitted, 0.3))


def test_time_ramp_stays_monotone_and_in_range(deit_state):
    cols = torch.linspace(-1.0, 2.0, DEIT_GRID).view(1, 1, 1, -1)
    fitted = adapted_pos_grid(deit_state, cols.expand(1, 192, DEIT_GRID, DEIT_GRID).contiguous())
    assert fitted.shape[-1] == 49
    assert (fitted.diff(dim=-1) >= 0).all()
    assert fitted.min() >= -1.0 and fitted.max() <= 2.0


def test_nearest_mode_only_uses_source_values(deit_state):
    grid = torch.randn(1, 192, DEIT_GRID, DEIT_GRID)
    assert torch.isin(adapted_pos_grid(deit_state, grid, mode="nearest"), grid).all()


def test_reinit_mode_uses_no_source_value(deit_state):
    grid = torch.rand(1, 192, DEIT_GRID, DEIT_GRID) + 1  # no match by chance with std-0.02 noise
    assert not torch.isin(adapted_pos_grid(deit_state, grid, mode="reinit"), grid).any()


def test_other_patch_size_resamples_the_kernel(deit_state):
    model = AST(3, 128, 500, ASTOptions(patch_freq=32, patch_time=4, fstride=16, tstride=4))
    model.load_state_dict(adapt_deit_to_ast(deit_state, model))
    assert model.patch_embed.proj.weight.shape == (192, 1, 32, 4)
    assert torch.isfinite(model.patch_embed.proj.weight).all()


def test_missing_and_unexpected_keys_are_named(deit_state):
    model = AST(3, 128, 500)
    state = {key: value for key, value in deit_state.items() if key != "blocks.3.mlp.fc1.bias"}
    state["blocks.3.mlp.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys \[blocks.3.mlp.fc1.bias\].*"
                                         r"unexpected keys \[blocks.3.mlp.extra\]"):
        adapt_deit_to_ast(state, model)


def test_wrong_shapes_are_named(deit_state):
    state = dict(deit_state)
    state["norm.weight"] = torch.ones(384)
    with pytest.raises(ValueError, match="norm.weight"):
        adapt_deit_to_ast(state, AST(3, 128, 500))

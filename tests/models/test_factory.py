"""The model factory: shapes, parameter counts, AST options and patchout, and weight errors.

Real forward and backward passes on the CPU; no weights are downloaded.
"""

import huggingface_hub.constants
import pytest
import timm
import torch

from stages.models.ast_model import sincos_pos_embed_2d, structured_patchout
from stages.models.ast_options import ASTOptions
from stages.models.factory import PretrainedWeightsNotFound, count_parameters, create_model

N_MELS, N_FRAMES = 128, 500


@pytest.fixture
def spectrograms() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, N_MELS, N_FRAMES)


@pytest.mark.parametrize("arch, first_layer", [("ast_tiny", "patch_embed.proj.weight"),
                                               ("efficientnet_b0", "backbone.conv_stem.weight")])
def test_forward_and_backward(arch, first_layer, spectrograms):
    model = create_model(arch, 11, N_MELS, N_FRAMES).train()
    logits = model(spectrograms)
    assert logits.shape == (2, 11)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)).backward()
    gradient = model.get_parameter(first_layer).grad
    assert gradient is not None and gradient.abs().sum() > 0


@pytest.mark.parametrize("arch, expected", [("efficientnet_b0", 4_515_529), ("ast_tiny", 5_578_765)])
def test_parameter_counts(arch, expected):
    assert count_parameters(create_model(arch, 397, N_MELS, N_FRAMES)) == (expected, expected)


def test_count_parameters_separates_frozen_ones():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert count_parameters(model) == (8 + 3, 3)


@pytest.mark.parametrize("n_frames", [500, 501])
def test_ast_patch_grid(n_frames):
    model = create_model("ast_tiny", 5, N_MELS, n_frames).eval()
    assert model.grid_size == (12, 49)
    assert model.embed(torch.zeros(1, N_MELS, n_frames)).shape == (1, 2 + 12 * 49, 192)


def test_ast_tall_narrow_patches(spectrograms):
    options = {"patch_freq": 32, "patch_time": 4, "fstride": 16, "tstride": 4}
    model = create_model("ast_tiny", 5, N_MELS, N_FRAMES, options=options).eval()
    assert model.grid_size == ((128 - 32) // 16 + 1, (500 - 4) // 4 + 1)
    assert model.patch_embed.proj.weight.shape == (192, 1, 32, 4)
    with torch.no_grad():  # 877 tokens: one example is enough
        assert model(spectrograms[:1]).shape == (1, 5)


def test_ast_rejects_input_of_another_size():
    model = create_model("ast_tiny", 5, N_MELS, N_FRAMES).eval()
    with pytest.raises(ValueError, match="patch grid"):
        model(torch.zeros(1, N_MELS, 300))


def test_patchout_drops_tokens_in_training_only():
    options = {"patchout_freq": 0.25, "patchout_time": 0.5}
    model = create_model("ast_tiny", 5, N_MELS, 200, options=options)  # 12 x 19 patches
    spectrograms = torch.randn(2, N_MELS, 200)
    kept = (12 - 3) * (19 - 9)  # int(0.25 * 12) rows and int(0.5 * 19) columns dropped
    model.train()
    assert model.embed(spectrograms).shape == (2, 2 + kept, 192)
    model(spectrograms).sum().backward()
    model.eval()
    assert model.embed(spectrograms).shape == (2, 2 + 12 * 19, 192)
    with torch.no_grad():
        assert torch.equal(model(spectrograms), model(spectrograms))


def test_ast_pools_the_mean_of_cls_and_distillation_tokens():
    """As the official AST (and DeiT at inference): logits = head((CLS + distillation) / 2) of the
    final norm's output; neither token alone, nor a mean over the patch tokens."""
    torch.manual_seed(0)
    model = create_model("ast_tiny", 5, N_MELS, 100).eval()  # 12 x 9 patches: fast
    normed = []
    model.norm.register_forward_hook(lambda module, inputs, output: normed.append(output))
    spectrograms = torch.randn(3, N_MELS, 100)
    with torch.no_grad():
        logits = model(spectrograms)
        (tokens,) = normed
        assert tokens.shape == (3, 2 + 12 * 9, 192)
        expected = model.head((tokens[:, 0] + tokens[:, 1]) / 2)
        alternatives = {"CLS alone": model.head(tokens[:, 0]), "distillation alone": model.head(tokens[:, 1]),
                        "patch mean": model.head(tokens[:, 2:].mean(dim=1))}
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    for name, other in alternatives.items():  # the test can tell the poolings apart
        assert (other - expected).abs().max() > 1e-3, name


def test_structured_patchout_keeps_whole_rows_and_columns():
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(8), indexing="ij")
    grid = torch.stack([rows, cols], dim=-1).unsqueeze(0).expand(3, -1, -1, -1)  # [3, 6, 8, 2]
    kept = structured_patchout(grid, drop_freq=0.5, drop_time=0.25)
    assert kept.shape == (3, 3, 6, 2)
    assert all(torch.equal(kept[0], kept[i]) for i in range(3))  # same patches for the batch
    assert (kept[0, :, :, 0] == kept[0, :, :1, 0]).all()  # a row keeps one frequency index
    assert (kept[0, :, :, 1] == kept[0, :1, :, 1]).all()  # a column keeps one time index
    assert len(set(kept[0, :, 0, 0].tolist())) == 3 and len(set(kept[0, 0, :, 1].tolist())) == 6


def test_sincos_code_gives_each_patch_row_and_column_its_own_half():
    code = sincos_pos_embed_2d((3, 5), 16).reshape(3, 5, 16)
    freq_half, time_half = code[..., :8], code[..., 8:]
    assert (freq_half == freq_half[:, :1]).all() and (time_half == time_half[:1]).all()
    assert torch.allclose(freq_half[:, 0, :4] ** 2 + freq_half[:, 0, 4:] ** 2, torch.ones(3, 4))  # sin^2 + cos^2
    assert torch.equal(freq_half[0, 0], torch.tensor([0.0] * 4 + [1.0] * 4))  # position 0
    assert torch.allclose(time_half[0, 1, :4], torch.sin(torch.tensor([1.0, 0.1, 0.01, 0.001])))  # 10000^(-k/4)
    assert len({tuple(row.tolist()) for row in code.reshape(15, 16)}) == 15  # every patch distinct


def test_sincos_code_needs_channels_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4, got 18"):
        sincos_pos_embed_2d((2, 2), 18)


@pytest.mark.parametrize("init", ["trunc_normal", "sincos"])
def test_ast_position_embedding_init(init):
    torch.manual_seed(0)
    model = create_model("ast_tiny", 5, N_MELS, N_FRAMES, options={"pos_embed_init": init})
    patches = model.pos_embed[0, 2:].detach()
    assert model.pos_embed.requires_grad  # either way it is trained
    if init == "sincos":
        assert torch.equal(patches, sincos_pos_embed_2d(model.grid_size, 192))
    else:
        assert 0.018 < patches.std() < 0.022 and patches.abs().max() < 0.15  # normal, std 0.02
    assert 0 < model.pos_embed[0, :2].abs().max() < 0.15  # CLS and distillation positions: random either way


def test_ast_options_defaults_are_the_papers():
    options = ASTOptions.from_dict(None)
    assert (options.patch_freq, options.patch_time, options.fstride, options.tstride) == (16, 16, 10, 10)
    assert options.patchout_freq == options.patchout_time == 0.0
    assert options.pos_embed_interp == "bilinear" and options.pos_embed_init == "trunc_normal"


def test_unknown_ast_option_is_named():
    with pytest.raises(ValueError, match=r"patch_size.*allowed.*patch_freq"):
        create_model("ast_tiny", 5, N_MELS, N_FRAMES, options={"patch_size": 16})


@pytest.mark.parametrize("key, value", [
    ("patch_freq", 0), ("patch_time", -4), ("fstride", 2.5), ("tstride", True),
    ("patchout_freq", 1.0), ("patchout_time", -0.1), ("patchout_time", "0.5"),
    ("pos_embed_interp", "bicubic"), ("pos_embed_init", "zeros"),
])
def test_bad_ast_option_values_are_named(key, value):
    with pytest.raises(ValueError, match=key):
        ASTOptions.from_dict({key: value})


def test_ast_patches_larger_than_input_are_rejected():
    with pytest.raises(ValueError, match="do not fit"):
        create_model("ast_tiny", 5, 64, N_FRAMES, options={"patch_freq": 80})


def test_unknown_arch_lists_what_is_known():
    with pytest.raises(ValueError, match=r"no_such_net.*ast_tiny.*any timm model name"):
        create_model("no_such_net", 5, N_MELS, N_FRAMES)


def test_timm_options_are_passed_on():
    model = create_model("efficientnet_b0", 5, N_MELS, N_FRAMES, options={"drop_rate": 0.3})
    assert model.backbone.drop_rate == 0.3


def test_unknown_timm_option_is_named():
    with pytest.raises(ValueError, match="not_a_knob"):
        create_model("efficientnet_b0", 5, N_MELS, N_FRAMES, options={"not_a_knob": 1})


@pytest.mark.parametrize("arch", ["ast_tiny", "efficientnet_b0"])
def test_missing_weights_file_says_where_it_looked(arch, tmp_path):
    path = tmp_path / "missing.pth"
    with pytest.raises(PretrainedWeightsNotFound, match=str(path)):
        create_model(arch, 5, N_MELS, N_FRAMES, pretrained=str(path))


@pytest.mark.parametrize("arch", ["ast_tiny", "efficientnet_b0"])
def test_weights_not_in_offline_hub_cache(arch, monkeypatch, tmp_path):
    # huggingface_hub reads these variables at import, so its constants are patched too.
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsNotFound, match=str(tmp_path / "hub")):
        create_model(arch, 5, N_MELS, N_FRAMES, pretrained=True)


def test_efficientnet_from_local_imagenet_file(tmp_path):
    imagenet_state = timm.create_model("efficientnet_b0", pretrained=False).state_dict()  # RGB, 1000
    path = tmp_path / "efficientnet_b0.pth"
    torch.save(imagenet_state, path)
    model = create_model("efficientnet_b0", 397, N_MELS, N_FRAMES, pretrained=str(path))
    backbone = model.backbone
    torch.testing.assert_close(backbone.conv_stem.weight,
                               imagenet_state["conv_stem.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(backbone.blocks[3][0].conv_pw.weight,
                       imagenet_state["blocks.3.0.conv_pw.weight"])
    assert backbone.classifier.weight.shape == (397, 1280)

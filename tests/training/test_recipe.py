"""How `auto` in the training recipe resolves per model and device, and what a recipe does to a model."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from helpers import make_params
from stages.models.factory import create_model
from stages.training.recipe import CUDA_AUTO, prepare_model, resolve_recipe, step_context

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def train_params(**overrides):
    return make_params({f"train.{key}": value for key, value in overrides.items()}).train


@pytest.mark.parametrize("arch, channels_last", [("efficientnet_b0", True), ("ast_tiny", False)])
def test_auto_on_the_cpu_is_fp32_with_cnns_in_channels_last(arch, channels_last):
    recipe = resolve_recipe(arch, CPU, train_params(precision="auto", channels_last="auto"))
    assert (recipe.precision, recipe.channels_last, recipe.autocast_dtype) == ("fp32", channels_last, None)


@mock.patch("torch.cuda.is_bf16_supported", return_value=True)
def test_auto_on_cuda_follows_the_measured_table(_):
    tp = train_params(precision="auto", channels_last="auto", compile=True, batch_size=128)
    ast = resolve_recipe("ast_tiny", CUDA, tp)
    cnn = resolve_recipe("efficientnet_b0", CUDA, tp)
    assert (ast.precision, ast.channels_last) == CUDA_AUTO["transformer"] == ("bf16", False)
    assert (cnn.precision, cnn.channels_last) == CUDA_AUTO["cnn"]
    assert ast.autocast_dtype == torch.bfloat16
    assert ast.compile and ast.batch_size == 128
    assert ast.as_dict() == {"precision": "bf16", "channels_last": False, "compile": True, "batch_size": 128,
                             "cudnn_benchmark": True, "fused_optimizer": True, "tf32": True}
    cpu = resolve_recipe("ast_tiny", CPU, tp)
    assert not (cpu.cudnn_benchmark or cpu.fused_optimizer or cpu.tf32)  # CUDA switches only


@mock.patch("torch.cuda.is_bf16_supported", return_value=True)
def test_explicit_choices_override_auto(_):
    recipe = resolve_recipe("efficientnet_b0", CUDA, train_params(precision="fp16", channels_last=True))
    assert (recipe.precision, recipe.channels_last, recipe.autocast_dtype) == ("fp16", True, torch.float16)


@mock.patch("torch.cuda.get_device_name", return_value="Old GPU")
@mock.patch("torch.cuda.is_bf16_supported", return_value=False)
def test_bf16_on_a_gpu_without_it_is_refused(*_):
    with pytest.raises(ValueError, match="train.precision: bf16 .* Old GPU does not support it"):
        resolve_recipe("ast_tiny", CUDA, train_params(precision="bf16"))


def test_channels_last_recipe_changes_the_weights_layout_not_the_output():
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", 3, 32, 40)
    x = torch.randn(2, 32, 40)
    model.eval()
    with torch.no_grad():
        before = model(x)
        recipe = resolve_recipe("efficientnet_b0", CPU, train_params(channels_last=True))
        step_model = prepare_model(model, recipe)
        after = step_model(x)
    stem = model.backbone.conv_stem.weight  # [32, 1, 3, 3]: channels_last strides are (9, 1, 3, 1)
    assert stem.stride() == (9, 1, 3, 1)
    assert step_model is model  # not compiled: the same module
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_bf16_autocast_on_the_cpu_runs_the_model_in_bf16():
    recipe = resolve_recipe("ast_tiny", CPU, train_params(precision="bf16"))
    layer = torch.nn.Linear(4, 2)
    with step_context(CPU, recipe):
        assert layer(torch.randn(3, 4)).dtype == torch.bfloat16
    with step_context(CPU, resolve_recipe("ast_tiny", CPU, train_params(precision="fp32"))):
        assert layer(torch.randn(3, 4)).dtype == torch.float32

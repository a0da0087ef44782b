"""The model registry (stages/models/registry.py): every registered model has a builder and a declared
family, unknown archs are named, and the training recipe follows the declared family, not a guess
from which dict a name is in."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from helpers import make_params
from stages.models.factory import MODEL_BUILDERS
from stages.models.registry import MODELS, TIMM_FAMILY, ModelSpec, UnknownArch, check_arch, family_of
from stages.training.recipe import CPU_AUTO, CUDA_AUTO, resolve_recipe


def test_every_registered_model_has_a_builder_and_a_family():
    assert MODEL_BUILDERS.keys() == MODELS.keys()
    assert {spec.family for spec in MODELS.values()} <= {"transformer", "cnn"}
    assert family_of("ast_tiny") == "transformer"
    assert family_of("efficientnet_b0") == family_of("resnet18") == TIMM_FAMILY == "cnn"


def test_check_arch_names_what_is_allowed():
    check_arch("ast_tiny")
    check_arch("efficientnet_b0")
    with pytest.raises(UnknownArch, match=r"Unknown model arch 'resnet_9000': expected one of \['ast_tiny'\] "
                                          r"or any timm model name"):
        check_arch("resnet_9000")


@mock.patch("torch.cuda.is_bf16_supported", return_value=True)
def test_a_cnn_of_our_own_gets_the_cnn_recipe(_, monkeypatch):
    """The old rule treated every model with a builder of ours as a transformer (bf16 on CUDA)."""
    monkeypatch.setitem(MODELS, "our_cnn", ModelSpec("cnn", lambda options, n_mels, n_frames: options))
    tp = make_params({"train.precision": "auto", "train.channels_last": "auto"}).train
    for device, table in ((torch.device("cuda"), CUDA_AUTO), (torch.device("cpu"), CPU_AUTO)):
        recipe = resolve_recipe("our_cnn", device, tp)
        assert (recipe.precision, recipe.channels_last) == table["cnn"]
        assert table["cnn"] != table["transformer"]

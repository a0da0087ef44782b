"""The checks of params.yaml that span sections (stages/core/params.py, `check_across_sections` and
`check_timm_archs`): the STFT window and fmax against the sample rate, AST options and patches against
the spectrogram, and archs, all with the full key path, before a stage does any work."""

from __future__ import annotations

import re

import pytest
import yaml

from helpers import error_for, make_params, raw_params, run_stage, set_key, write_params
from stages.models.factory import create_model
from stages.core.params import ParamsError, parse_params

MODELS = ("efficientnet_b0", "ast_tiny")



def test_unknown_arch_is_rejected_at_load_by_the_stages_that_build_models():
    raw = set_key(raw_params(), "models.efficientnet_b0.arch", "efficientnet_b99")
    with pytest.raises(ParamsError) as caught:
        parse_params(raw, timm_archs=True)
    assert re.match(r"models\.efficientnet_b0\.arch: Unknown model arch 'efficientnet_b99'.*ast_tiny.*timm",
                    str(caught.value))
    # The data stages never read `models`: they do not import timm to check it.
    assert parse_params(raw).models["efficientnet_b0"].arch == "efficientnet_b99"


def test_train_stops_on_an_unknown_arch_before_reading_any_data(tmp_path):
    write_params(tmp_path / "params.yaml", {"models.efficientnet_b0.arch": "efficientnet_b99"})
    result = run_stage("stages.train", "--params", "params.yaml", "--model", "ast_tiny", "--prepared", "none",
                       "--features", "none", "--out", "out", "--live", "live", "--resume-dir", "resume", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "params.yaml: models.efficientnet_b0.arch: Unknown model arch 'efficientnet_b99': expected one of "
        "['ast_tiny'] or any timm model name (see timm.list_models())")
    assert not (tmp_path / "out").exists() and not (tmp_path / "live").exists()


def test_the_model_factory_rejects_an_unknown_arch_too():
    with pytest.raises(ValueError, match=r"Unknown model arch 'efficientnet_b99'.*ast_tiny.*timm"):
        create_model("efficientnet_b99", 3, 128, 101)


def test_unknown_ast_option_is_rejected_at_load():
    raw = raw_params()
    raw["models"]["ast_tiny"]["options"]["patch_stride"] = 8
    error = error_for(raw)
    assert error.startswith("models.ast_tiny.options.patch_stride: unknown option (allowed: "), error
    assert "fstride" in error


def test_bad_ast_option_value_is_rejected_at_load():
    error = error_for(set_key(raw_params(), "models.ast_tiny.options.fstride", 0))
    assert error == "models.ast_tiny.options.fstride: must be a positive integer, got 0"


def test_ast_patches_that_do_not_fit_the_features_are_rejected_at_load():
    # 1 s chunks at a 10 ms hop are 101 frames: a 128-frame patch does not fit.
    raw = set_key(set_key(set_key(raw_params(), "data.chunk_seconds", 1.0), "data.min_remainder_seconds", 0.5),
                  "models.ast_tiny.options.patch_time", 128)
    error = error_for(raw)
    assert error.startswith("models.ast_tiny.options.patch_time: AST patches of 16 x 128 do not fit a 128 x 101 "
                            "spectrogram"), error


def test_a_timm_models_options_are_left_to_timm():
    raw = set_key(raw_params(), "models.efficientnet_b0.options", {"drop_rate": 0.2})
    assert parse_params(raw).models["efficientnet_b0"].options == {"drop_rate": 0.2}


def test_a_bad_ast_option_stops_the_first_stage_before_any_work(tmp_path):
    raw = set_key(raw_params(), "models.ast_tiny.options.patch_time", 0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = run_stage("stages.demo_data", "--params", "params.yaml", "--out", "demo", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "params.yaml: models.ast_tiny.options.patch_time: must be a positive integer, got 0")
    assert not (tmp_path / "demo").exists()


def test_feature_params_are_checked_against_the_sample_rate_when_loaded():
    with pytest.raises(ParamsError, match=r"^features\.win_ms: a 40.0 ms window is 1280 samples, longer "
                                          r"than features\.n_fft \(1024\)"):
        make_params({"features.win_ms": 40.0})  # 1280 samples > n_fft 1024
    with pytest.raises(ParamsError, match=r"^features\.fmax: 20000.0 Hz is above the Nyquist frequency"):
        make_params({"features.fmax": 20000.0})
    assert make_params().features.win_length(32000) <= make_params().features.n_fft


@pytest.mark.parametrize("dotted, value, message", [
    # 5 s chunks at a 10 ms hop: 501 frames; 128 mel bands.
    ("train.time_mask", 501, "train.time_mask: a mask of up to 501 can cover all 501 frames of a chunk; "
                             "keep it below 501 (0 disables it)"),
    ("train.freq_mask", 128, "train.freq_mask: a mask of up to 128 can cover all 128 mel bands; "
                             "keep it below 128 (0 disables it)"),
    ("data.chunk_seconds", 0.02, "data.chunk_seconds: a 0.02 s chunk is 640 samples, shorter than one STFT window "
                                 "(features.n_fft = 1024); lengthen it"),
])
def test_parameters_that_would_zero_every_input_are_refused_at_load(dotted, value, message):
    raw = set_key(raw_params(), dotted, value)
    if dotted == "data.chunk_seconds":
        raw["data"]["min_remainder_seconds"] = 0.01
    assert error_for(raw) == message


def test_masks_just_below_the_input_are_accepted():
    params = parse_params(set_key(set_key(raw_params(), "train.time_mask", 500), "train.freq_mask", 127))
    assert (params.train.time_mask, params.train.freq_mask) == (500, 127)

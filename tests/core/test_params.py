"""params.yaml validation: the repo's own file, modified one key at a time, must either parse into the
value meant or stop with a ParamsError that starts with the dotted key at fault. Rules across sections
(the STFT window against the sample rate, a model's arch and AST options against the spectrogram) are
checked at load too, so a bad option stops the first stage; `stages.train` refuses a --model that
params.yaml does not define."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import yaml

from helpers import ROOT, error_for, parent_and_leaf, raw_params, run_stage, set_key, write_params
from stages.core.params import ParamsError, load_params, parse_params

MODELS = ("efficientnet_b0", "ast_tiny")


def delete_key(raw: dict, dotted: str) -> dict:
    node, leaf = parent_and_leaf(raw, dotted)
    del node[leaf]
    return raw


# --------------------------------------------------------------------------------- accepted

def test_repo_params_parse():
    params = parse_params(raw_params())
    assert set(MODELS) <= set(params.models)
    for name in MODELS:
        assert params.effective_lr(name) == params.lr * params.models[name].lr_scale > 0


@pytest.mark.parametrize("value", ["1e-4", "1.0e-4", 1e-4, "0.0001"])
def test_lr_string_from_pyyaml_is_the_number_it_means(value):
    params = parse_params(set_key(raw_params(), "lr", value))
    assert isinstance(params.lr, float) and params.lr == 0.0001


def test_lr_written_without_a_decimal_point_in_real_yaml(tmp_path):
    text = (ROOT / "params.yaml").read_text()
    text, replaced = re.subn(r"^lr: .*$", "lr: 1e-4", text, flags=re.MULTILINE)
    assert replaced == 1
    assert yaml.safe_load(text)["lr"] == "1e-4"  # YAML 1.1 needs a dot for a float; PyYAML gives a str
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params.lr == 0.0001
    assert params.effective_lr("ast_tiny") == 0.0001 * params.models["ast_tiny"].lr_scale


def test_integer_lr_is_a_float():
    params = parse_params(set_key(raw_params(), "lr", 1))
    assert params.lr == 1.0 and isinstance(params.lr, float)


# --------------------------------------------------------------------------------- rejected

@pytest.mark.parametrize("dotted, value, message", [
    ("lr", 0, "must be > 0"),
    ("lr", 0.0, "must be > 0"),
    ("lr", -1e-4, "must be > 0"),
    ("lr", "-1e-4", "must be > 0"),
    ("lr", float("nan"), "expected a number"),
    ("lr", "nan", "expected a number"),
    ("lr", float("inf"), "expected a number"),
    ("lr", "fast", "expected a number"),
    ("lr", True, "expected a number"),
    ("lr", None, "expected a number"),
    ("train.epochs", 0, "must be >= 1"),
    ("train.epochs", -2, "must be >= 1"),
    ("train.epochs", "3", "expected an integer"),
    ("train.epochs", 3.0, "expected an integer"),
    ("train.epochs", True, "expected an integer"),
    ("train.batch_size", 0, "must be >= 1"),
    ("train.optimizer", "sgd", "must be one of"),
    ("train.device", "gpu", "must be one of"),
    ("train.weight_decay", -0.1, "must be >= 0"),
    ("train.mixup_alpha", "nan", "expected a number"),
    ("train.compile", "true", "expected true or false"),
    ("train.precision", "fp8", "must be one of"),
    ("train.channels_last", "yes", "must be auto, true or false"),
    ("data.strict", "yes", "expected true or false"),
    ("data.strict", 1, "expected true or false"),
    ("models.efficientnet_b0.pretrained", "", "expected true, false or a file path, got ''"),
    ("models.ast_tiny.pretrained", "", "expected true, false or a file path, got ''"),
    ("models.ast_tiny.pretrained", 1, "expected true, false or a file path"),
    ("models.ast_tiny.lr_scale", 0, "must be > 0"),
    ("models.ast_tiny.options", [1, 2], "expected a mapping"),
    ("train", None, "expected a mapping"),
])
def test_bad_value_is_named(dotted, value, message):
    error = error_for(set_key(raw_params(), dotted, value))
    assert error.startswith(f"{dotted}: "), error
    assert message in error


@pytest.mark.parametrize("section", ["", "train", "data", "models.ast_tiny", "evaluate"])
def test_unknown_key_is_named(section):
    raw = raw_params()
    node = raw
    for name in filter(None, section.split(".")):
        node = node[name]
    node["lerning_rate"] = 1e-3
    key = f"{section}.lerning_rate" if section else "lerning_rate"
    error = error_for(raw)
    assert error.startswith(f"{key}: unknown key"), error
    assert "allowed:" in error


@pytest.mark.parametrize("dotted", ["seed", "lr", "train", "train.epochs", "data.strict",
                                    "models.efficientnet_b0.arch", "models.ast_tiny.options"])
def test_missing_key_is_named(dotted):
    error = error_for(delete_key(raw_params(), dotted))
    assert error == f"{dotted}: missing"


@pytest.mark.parametrize("dotted, value", [
    ("data.sample_rate", 7999),
    ("data.chunk_seconds", 0),
    ("data.chunk_seconds", -5.0),
    ("data.hop_seconds", 0),
    ("data.max_chunks_per_recording", 0),
    ("data.min_remainder_seconds", 0),
    ("data.min_remainder_seconds", 5.5),  # > chunk_seconds (5.0)
    ("data.secondary_label_weight", -0.1),
    ("data.secondary_label_weight", 1.1),
    ("data.valid_fraction", 0),
    ("data.valid_fraction", 1),
    ("data.min_rating", "high"),
    ("data.root", 5),
    ("train.threads", 0),
    ("train.threads", -1),
    ("train.threads", "many"),
    ("train.threads", True),
    ("train.threads", 2.0),
    ("seed", -1),  # numpy refused it deep inside prepare
    ("seed", 2 * 10**16),  # torch refused it deep inside train
    ("train.processes", 0),
    ("train.processes", "all"),
    ("train.processes", 1.5),
    ("train.channels_last", 1),
    ("train.warmup_epochs", -1.0),
    ("train.warmup_epochs", 10.5),  # > epochs (10)
    ("evaluate.tune_fraction", 0),
    ("evaluate.tune_fraction", 1),
    ("evaluate.bootstrap_samples", 5),
    ("evaluate.bootstrap_samples", 10**9),  # ran all inference, then asked for 89 GiB
    ("evaluate.confidence_level", 1.5),
    ("evaluate.confidence_level", 0),
    ("demo.min_recording_seconds", 31.0),  # > max_recording_seconds (30.0)
    ("demo.soundscape_seconds", 12),
    ("features.fmin", 14000.0),  # not < fmax
    ("features.win_ms", 0),
    ("features.device", "tpu"),
    ("models.ast_tiny.lr_scale", -0.2),
])
def test_out_of_range_value_is_named(dotted, value):
    assert error_for(set_key(raw_params(), dotted, value)).startswith(f"{dotted}: ")


@pytest.mark.parametrize("dotted", ["seed", "train.epochs", "data.max_chunks_per_recording",
                                    "evaluate.bootstrap_samples", "lr", "data.chunk_seconds",
                                    "evaluate.confidence_level", "models.ast_tiny.lr_scale"])
@pytest.mark.parametrize("value", [True, False])
def test_bools_are_not_numbers(dotted, value):
    error = error_for(set_key(raw_params(), dotted, value))
    assert error.startswith(f"{dotted}: expected "), error
    assert repr(value) in error


def test_threshold_grid_names_the_item():
    error = error_for(set_key(raw_params(), "evaluate.threshold_grid", [0.1, 0.5, 1.0]))
    assert error == "evaluate.threshold_grid[2]: must be < 1"


@pytest.mark.parametrize("dotted, value", [("train.threads", 3), ("train.threads", "auto"),
                                           ("train.processes", 4), ("train.processes", "auto"),
                                           ("train.warmup_epochs", 10.0), ("train.warmup_epochs", 0.0),
                                           ("train.channels_last", True), ("models.ast_tiny.pretrained", True),
                                           ("models.ast_tiny.pretrained", "ckpt/ast.pt")])
def test_accepted_values(dotted, value):
    *parents, leaf = dotted.split(".")
    node = parse_params(set_key(raw_params(), dotted, value))
    for name in parents:
        node = node[name] if isinstance(node, dict) else getattr(node, name)
    assert getattr(node, leaf) == value and type(getattr(node, leaf)) is type(value)


def test_options_none_is_an_empty_dict():
    params = parse_params(set_key(raw_params(), "models.ast_tiny.options", None))
    assert params.models["ast_tiny"].options == {} and type(params.models["ast_tiny"].options) is dict


def test_params_are_frozen():
    params = parse_params(raw_params())
    for node, field in [(params, "lr"), (params.data, "root"), (params.train, "epochs"),
                        (params.models["ast_tiny"], "lr_scale"), (params.evaluate, "tune_fraction")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(node, field, getattr(node, field))


def test_replace_still_validates():
    params = parse_params(raw_params())
    train = dataclasses.replace(params.train, batch_size=4)
    assert dataclasses.replace(params, train=train).train.batch_size == 4
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        dataclasses.replace(params.train, batch_size=0)


def test_first_error_prefers_an_unknown_key():
    raw = raw_params()
    raw["train"]["epochs_"] = raw["train"].pop("epochs")
    raw["seed"] = "x"
    assert error_for(raw).startswith("train.epochs_: unknown key (allowed: epochs, ")


def test_repo_params_file_loads():
    params = load_params(ROOT / "params.yaml")
    assert params.models and params.train.threads == "auto"
    assert params.data.chunk_samples == round(params.data.chunk_seconds * params.data.sample_rate)


def test_empty_models_are_rejected():
    assert error_for(set_key(raw_params(), "models", {})).startswith("models: ")
    assert error_for(set_key(raw_params(), "models", None)).startswith("models: ")


def test_load_params_names_the_file_and_the_key(tmp_path):
    path = write_params(tmp_path / "params.yaml", {"train.epochs": 0})
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.epochs: must be >= 1"):
        load_params(path)
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "broken.yaml")
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "absent.yaml")


def test_yaml_nan_is_rejected(tmp_path):
    text = re.sub(r"^lr: .*$", "lr: .nan", (ROOT / "params.yaml").read_text(), flags=re.MULTILINE)
    assert math.isnan(yaml.safe_load(text)["lr"])
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"lr: expected a number, got nan"):
        load_params(tmp_path / "params.yaml")


# ------------------------------------------------------------ model settings, checked at load


def test_train_refuses_a_model_not_in_params(tmp_path):
    params_file = write_params(tmp_path / "params.yaml")
    result = run_stage("stages.train", "--params", str(params_file), "--model", "resnet_9000",
                       "--prepared", "prepared", "--features", "features", "--out", "out",
                       "--live", "live", "--resume-dir", "resume", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("--model resnet_9000: not a key of `models`"), message
    assert "efficientnet_b0" in message and "ast_tiny" in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "live").exists()


@pytest.mark.parametrize("name", ["e;touch PWNED;#", "a b", "it's", "$(id)", "x/y", ""])
def test_a_model_name_a_shell_would_read_is_refused(name):
    """Model names become stage names, folders and arguments of dvc.yaml's shell commands."""
    raw = raw_params()
    raw["models"][name] = raw["models"].pop("ast_tiny")
    assert error_for(raw) == (f"models: the model name {name!r} may hold only letters, digits, '_', '.' and '-' "
                              "(it becomes a DVC stage name, a folder and a command-line argument); rename it")


@pytest.mark.parametrize("name", ["ast_tiny", "ast-tiny.v2", "EffNet_B0"])
def test_ordinary_model_names_are_accepted(name):
    raw = raw_params()
    raw["models"][name] = raw["models"].pop("ast_tiny")
    assert name in parse_params(raw).models


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("  epochs: 10\n", "  epochs: 10\n  epochs: 3\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    expected = r"(?s)not valid YAML: the key 'epochs' appears twice in one section; keep one.*line \d+"
    with pytest.raises(ParamsError, match=expected):
        load_params(tmp_path / "params.yaml")

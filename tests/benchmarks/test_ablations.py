"""`make ablations` without running it: the experiment set, its validity against params.yaml, and the
report built from a `dvc exp show --json` entry."""

from __future__ import annotations

import json

import matplotlib.image
import pandas as pd
import pytest

from bench.ablation_report import write_recipe_report, write_report
import bench.ablations
from bench.ablations import _row, collect, variants
from bench.recipe_variants import ELEMENTS, OFF, recipe_rows, recipe_variants
from helpers import raw_params
from stages.models.ast_options import ASTOptions, patch_grid_size
from stages.core.params import parse_params


def apply(overrides: dict) -> dict:
    return raw_params({key: value for key, value in overrides.items()})


def test_random_weights_run_patch_shapes_patchout_and_the_position_embedding_init():
    found = variants(128, None)
    assert list(found) == ["abl-16x16-s10", "abl-16x16-s10-patchout", "abl-tall-128x4", "abl-tall-128x4-patchout",
                           "abl-16x16-s10-trunc-normal"]
    inits = {name: o["models.ast_tiny.options.pos_embed_init"] for name, o in found.items()}
    assert inits.pop("abl-16x16-s10-trunc-normal") == "trunc_normal" and set(inits.values()) == {"sincos"}
    official = found["abl-16x16-s10-trunc-normal"]
    assert {k: v for k, v in official.items() if "pos_embed_init" not in k} == {
        k: v for k, v in found["abl-16x16-s10"].items() if "pos_embed_init" not in k}  # only the init differs


def test_imagenet_weights_add_the_position_embedding_fits():
    found = variants(128, "deit.pth")
    fits = {o["models.ast_tiny.options.pos_embed_interp"] for o in found.values()}
    assert fits == {"bilinear", "nearest", "reinit"}
    assert all(o["models.ast_tiny.pretrained"] == "deit.pth" for o in found.values())


ALL_VARIANTS = {**variants(128, "deit.pth"), **variants(128, None)}


@pytest.mark.parametrize("name", list(ALL_VARIANTS))
def test_every_variant_is_a_valid_configuration_with_the_intended_grid(name):
    overrides = ALL_VARIANTS[name]
    params = parse_params(apply(overrides))  # every -S key exists and validates
    options = ASTOptions.from_dict(params.models["ast_tiny"].options)
    grid = patch_grid_size(128, 501, options)
    if "tall" in name:
        assert grid == (1, (501 - 4) // 4 + 1)  # full mel height, one column per 4 frames
    else:
        assert grid == ((128 - 16) // 10 + 1, (501 - 16) // 10 + 1)
    assert (options.patchout_time > 0) == name.endswith("patchout")


def exp_show_entry(name: str) -> dict:
    params = {"models": {"ast_tiny": {"pretrained": False, "options": {
        "patch_freq": 128, "patch_time": 4, "fstride": 128, "tstride": 4, "patchout_freq": 0.0,
        "patchout_time": 0.25, "pos_embed_interp": "bilinear", "pos_embed_init": "sincos"}}}}
    return {"params": {"params.yaml": {"data": params}},
            "metrics": {"reports/scores.json": {"data": {"ast_tiny": {"mAP": 0.7, "F1": 0.6, "loss": 0.2,
                                                                      "params": 5_000_000}}},
                        "reports/soundscape.json": {"data": {"ast_tiny": SOUNDSCAPE}},
                        "reports/timing.json": {"data": {"ast_tiny": {"s_epoch": 12.5}}}}}


SOUNDSCAPE = {"F1_low": 0.5, "F1_high": 0.7, "F1_all_nocall": 0.514, "nocall_predicted": 0.6, "nocall_true": 0.51}


def test_a_row_reads_the_ast_figures_of_an_experiment(tmp_path):
    row = _row("abl-tall-128x4-patchout", exp_show_entry("abl-tall-128x4-patchout"))
    assert row == {"experiment": "abl-tall-128x4-patchout", "patch": "128x4", "stride": "128x4",
                   "patchout": "0.0/0.25", "pos_embed": "random: sincos", "params": 5_000_000,
                   "valid_mAP": 0.7, "soundscape_F1": 0.6, "F1_low": 0.5, "F1_high": 0.7, "F1_all_nocall": 0.514,
                   "min_valid_loss": 0.2, "s_per_epoch": 12.5}
    write_report(pd.DataFrame([row, {**row, "experiment": "abl-x", "valid_mAP": 0.5}]), tmp_path,
                 pretrained=False, seconds=600)
    text = (tmp_path / "ablations.md").read_text()
    assert "abl-tall-128x4-patchout" in text and "abl-x" in text and "random weights" in text
    assert "0.600 [0.500, 0.700]" in text  # the F1 with its interval
    assert matplotlib.image.imread(tmp_path / "ablations.png").ndim == 3
    write_report(pd.DataFrame([row]), tmp_path, pretrained=False, seconds=None)  # tabulated only
    assert "by `make ablations`. One row" in (tmp_path / "ablations.md").read_text()


def test_experiments_are_collected_from_the_commit_they_were_queued_from(monkeypatch):
    # A commit made while the queue runs moves HEAD; `dvc exp show` alone then lists none of the set.
    asked = []
    shown = [{"rev": "workspace"}, {"rev": "abc123", "experiments": [
        {"revs": [{"name": "abl-tall-128x4-patchout", "data": exp_show_entry("abl-tall-128x4-patchout")}]}]}]

    def fake_dvc(*args, **_):
        asked.append(args)
        return type("Result", (), {"stdout": json.dumps(shown)})()
    monkeypatch.setattr(bench.ablations, "dvc", fake_dvc)
    table = collect(["abl-tall-128x4-patchout"], lambda name, data: [_row(name, data)], "abc123")
    assert asked == [("exp", "show", "--json", "--rev", "abc123")]
    assert list(table["experiment"]) == ["abl-tall-128x4-patchout"]
    with pytest.raises(SystemExit, match=r"--rev abc123` has no results for \['abl-x'\]"):
        collect(["abl-x"], lambda name, data: [_row(name, data)], "abc123")


def test_the_recipe_set_is_none_each_element_alone_and_all():
    found = recipe_variants()
    assert list(found) == ["rec-none", "rec-crops", "rec-noise", "rec-ema", "rec-crops-noise", "rec-all"]
    assert all(found[name].keys() == OFF.keys() for name in found)  # every row sets every element's keys
    for element, on in ELEMENTS.items():
        changed = {key for key, value in found[f"rec-{element}"].items() if value != OFF[key]}
        assert changed == set(on)
    assert {key for key, value in found["rec-all"].items() if value != OFF[key]} == set().union(*ELEMENTS.values())
    # The default pair is params.yaml's recipe, key for key.
    defaults = raw_params()
    for key, value in found["rec-crops-noise"].items():
        section, name = key.split(".")
        assert defaults[section][name] == value, key


@pytest.mark.parametrize("name", list(recipe_variants()))
def test_every_recipe_variant_is_a_valid_configuration(name):
    parse_params(apply(recipe_variants()[name]))


def test_recipe_rows_read_both_models_and_the_report_shows_intervals_and_nocall_shares(tmp_path):
    models = {"efficientnet_b0": {}, "ast_tiny": {}}
    entry = {"params": {"params.yaml": {"data": {"models": models}}},
             "metrics": {"reports/scores.json": {"data": {m: {"mAP": 0.9, "F1": 0.6} for m in models}},
                         "reports/soundscape.json": {"data": {m: SOUNDSCAPE for m in models}},
                         "reports/timing.json": {"data": {m: {"s_epoch": 7.0} for m in models}}}}
    rows = recipe_rows("rec-all", entry)
    assert [row["model"] for row in rows] == ["efficientnet_b0", "ast_tiny"]
    assert rows[0] == {"experiment": "rec-all", "model": "efficientnet_b0", "valid_mAP": 0.9, "soundscape_F1": 0.6,
                       **SOUNDSCAPE, "s_per_epoch": 7.0}
    write_recipe_report(pd.DataFrame(rows), tmp_path, seconds=1800)
    text = (tmp_path / "recipe_ablations.md").read_text()
    assert "0.600 [0.500, 0.700]" in text and "0.60 / 0.51" in text and "30 min" in text
    assert matplotlib.image.imread(tmp_path / "recipe_ablations.png").ndim == 3

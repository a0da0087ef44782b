"""The report stage from hand-written inputs: DVCLive-style training reports (metrics.json and the
per-epoch loss / valid mAP TSVs) and evaluation metrics for two models, with known numbers throughout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from helpers import raw_params, run_stage, write_params
from stages.reporting.build import build_report, read_history
from stages.reporting.tables import ROWS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = ("efficientnet_b0", "ast_tiny")

LOSSES = {  # per model: (train_loss, valid_loss, valid_map) per epoch, DVCLive step 1 = epoch 1
    "efficientnet_b0": ([0.5, 0.3, 0.25], [0.6, 0.3125, 0.4], [0.25, 0.5, 0.75]),
    "ast_tiny": ([0.7, 0.2, 0.125], [0.5, 0.25, 0.1875], [0.125, 0.375, 0.625]),
}
# What stages/training/convergence.py would make of LOSSES, worked out by hand. efficientnet_b0: final valid
# loss 0.4, bound 0.44, first epoch at or below it is 2 (0.3125); ast_tiny: final 0.1875, bound
# 0.20625, epoch 3. Both fell by more than 10% from their first epoch: learned. Quarters of 3 epochs end at epochs ceil(3/4, 6/4, 9/4, 12/4) = 1, 2, 3, 3.
CONVERGENCE = {
    "efficientnet_b0": {"learned": True, "valid_loss_first": 0.6, "epochs_to_within_10pct": 2, "seconds_to_within_10pct": 8.75,
                        "valid_loss_q1": 0.6, "valid_loss_q2": 0.3125, "valid_loss_q3": 0.4, "valid_loss_q4": 0.4},
    "ast_tiny": {"learned": True, "valid_loss_first": 0.5, "epochs_to_within_10pct": 3, "seconds_to_within_10pct": 30.25,
                 "valid_loss_q1": 0.5, "valid_loss_q2": 0.25, "valid_loss_q3": 0.1875, "valid_loss_q4": 0.1875},
}
THRESHOLD_RULE = "best row-wise F1 on 1 of 2 labelled soundscape files (taken alternately in sorted order); scored on the other 1"


def train_summary(seed: int) -> dict:
    """What stages.train writes via DVCLive: the last logged metrics, `step`, then the summary."""
    model = MODELS[seed]
    return {
        "train_loss": LOSSES[model][0][-1], "valid_loss": LOSSES[model][1][-1], "valid_map": LOSSES[model][2][-1],
        "lr": 1e-5, "epoch_seconds": 2.0, "train_samples_per_second": 50.0, "step": 3,
        "effective_lr": [5e-4, 1e-4][seed],
        "epochs": 3,
        "params_total": [4_010_815, 5_410_563][seed],
        "params_trainable": [4_010_815, 5_410_563][seed],
        "min_train_loss": [0.25, 0.125][seed],
        "min_valid_loss": [0.3125, 0.1875][seed],
        "best_epoch": [2, 3][seed],
        "max_valid_map": [0.75, 0.625][seed],
        "convergence": CONVERGENCE[model],
        "wall_clock_seconds": [12.5, 30.25][seed],
        "mean_epoch_seconds": [4.25, 10.5][seed],
        "mean_train_samples_per_second": [40.5, 16.25][seed],
        "peak_memory_mib": [900.0, 1200.0][seed],
        "device": "cpu",
        "torch_version": "2.x",
        "recipe": {"precision": "fp32", "channels_last": bool(seed), "compile": False, "batch_size": 16},
        "cpu_threads": 2,
    }


def evaluation(seed: int, soundscape: bool = True) -> dict:
    """evaluate's metrics.json layout (stages/evaluate.py)."""
    result = {
        "valid": {"chunks": [9, 7][seed], "recordings": [3, 2][seed], "bce_loss": 0.5,
                  "map": [0.75, 0.625][seed], "map_ci_low": [0.5, 0.375][seed], "map_ci_high": [0.875, 0.8125][seed],
                  "lrap": 0.8, "top1_accuracy": [0.5, 0.375][seed]},
        "baselines": {"class_prior": {"valid_map": [0.3125, 0.34375][seed]}},
        "inference": {"windows_per_second": [123.5, 45.25][seed], "batch_size": 64, "device": "cpu",
                      "precision": "fp32"},
    }
    if soundscape:
        result["soundscape"] = {
            "windows_tune": 4, "windows_scored": 8, "threshold_rule": THRESHOLD_RULE,
            "threshold": [0.25, 0.35][seed],
            "row_f1": [0.625, 0.5][seed], "row_f1_ci_low": [0.375, 0.25][seed], "row_f1_ci_high": [0.875, 0.75][seed],
            "row_f1_at_0.5": [0.25, 0.375][seed],
            "nocall_fraction_true": 0.5, "nocall_fraction_predicted": [0.25, 0.75][seed]}
        result["baselines"]["class_prior"].update(row_f1=[0.0625, 0.125][seed], threshold=0.05)
        result["baselines"]["all_nocall"] = {"row_f1": 0.5}
    return result


PER_CLASS_AP = {  # a class without a valid positive has no AP (an empty cell, as pandas writes NaN)
    "efficientnet_b0": "class,n_positive,average_precision\namerob,2,0.5\nnorcar,0,\nrewbla,1,0.25\n",
    "ast_tiny": "class,n_positive,average_precision\namerob,2,0.75\nnorcar,0,\nrewbla,1,1.0\n",
}


def write_inputs(root, soundscape=(True, True)):
    train_dir, eval_dir = root / "reports" / "train", root / "reports" / "eval"
    for seed, model in enumerate(MODELS):
        live = train_dir / model
        (live / "plots" / "metrics").mkdir(parents=True)
        (live / "metrics.json").write_text(json.dumps(train_summary(seed), indent=4))
        for name, values in zip(("train_loss", "valid_loss", "valid_map"), LOSSES[model]):
            lines = [f"step\t{name}"] + [f"{step}\t{value}" for step, value in enumerate(values, start=1)]
            (live / "plots" / "metrics" / f"{name}.tsv").write_text("\n".join(lines) + "\n")
        # A curve the report must ignore, as DVCLive writes one per logged metric.
        (live / "plots" / "metrics" / "lr.tsv").write_text("step\tlr\n1\t0.001\n2\t0.0005\n3\t0.0001\n")
        (eval_dir / model).mkdir(parents=True)
        (eval_dir / model / "metrics.json").write_text(json.dumps(evaluation(seed, soundscape[seed])))
        (eval_dir / model / "per_class_ap.csv").write_text(PER_CLASS_AP[model])
        (eval_dir / model / "precision_recall.json").write_text(
            json.dumps({"precision_recall": [{"recall": 1.0, "precision": 0.5, "threshold": 0.1 * seed}]}))
    return train_dir, eval_dir


@pytest.fixture
def report(tmp_path):
    train_dir, eval_dir = write_inputs(tmp_path)
    out = tmp_path / "reports"
    returned = build_report(list(MODELS), train_dir, eval_dir, out)
    return out, returned


def table_rows(summary: str) -> dict[str, list[str]]:
    """The comparison table of summary.md (the first table) as {row label: cells}, labels stripped."""
    rows, started = {}, False
    for line in summary.splitlines():
        if line.startswith("|"):
            started = True
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
        elif started:
            break
    return rows


def table_lines(summary: str) -> list[list[str]]:
    """The body rows of summary.md's first table, in order, duplicates kept: [label, *cells]."""
    lines = []
    for line in summary.splitlines():
        if line.startswith("|"):
            lines.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif lines:
            break
    return lines[2:]  # header and separator


def assert_readable_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 0 and data.startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 0 and height > 0
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert np.ptp(pixels[..., :3]) > 0  # not a blank canvas


# ----------------------------------------------------------------------------------- comparison.csv

def test_comparison_csv_has_one_row_per_model_with_the_input_numbers(report):
    out, returned = report
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["model"]) == list(MODELS)
    assert set(table.columns) >= {"model"} | {column for _, column, _ in ROWS}
    pd.testing.assert_frame_equal(table, returned, check_dtype=False)
    for seed, model in enumerate(MODELS):
        row = table.set_index("model").loc[model]
        train, evaluated = train_summary(seed), evaluation(seed)
        assert row["device"] == "cpu"
        assert row["recipe"] == ["fp32, batch 16", "fp32 + channels_last, batch 16"][seed]
        assert row["epochs"] == 3
        assert row["params_total"] == train["params_total"]
        assert row["valid_size"] == ["9 (3)", "7 (2)"][seed]
        assert row["soundscape_size"] == "8 (4)"
        assert row["valid_loss_quarters"] == ["0.6, 0.312, 0.4, 0.4", "0.5, 0.25, 0.188, 0.188"][seed]
        assert row["nocall_shares"] == ["0.25 / 0.50", "0.75 / 0.50"][seed]
        for column, expected in [
            ("effective_lr", train["effective_lr"]),
            ("wall_clock_seconds", train["wall_clock_seconds"]),
            ("mean_epoch_seconds", train["mean_epoch_seconds"]),
            ("train_samples_per_second", train["mean_train_samples_per_second"]),
            ("peak_memory_mib", train["peak_memory_mib"]),
            ("min_train_loss", train["min_train_loss"]),
            ("min_valid_loss", train["min_valid_loss"]),
            ("epochs_to_within_10pct", CONVERGENCE[model]["epochs_to_within_10pct"]),
            ("seconds_to_within_10pct", CONVERGENCE[model]["seconds_to_within_10pct"]),
            ("valid_map", evaluated["valid"]["map"]),
            ("baseline_prior_map", evaluated["baselines"]["class_prior"]["valid_map"]),
            ("valid_top1_accuracy", evaluated["valid"]["top1_accuracy"]),
            ("threshold", evaluated["soundscape"]["threshold"]),
            ("soundscape_row_f1", evaluated["soundscape"]["row_f1"]),
            ("soundscape_row_f1_at_0.5", evaluated["soundscape"]["row_f1_at_0.5"]),
            ("baseline_nocall_f1", evaluated["baselines"]["all_nocall"]["row_f1"]),
            ("baseline_prior_f1", evaluated["baselines"]["class_prior"]["row_f1"]),
            ("inference_windows_per_second", evaluated["inference"]["windows_per_second"]),
        ]:
            assert row[column] == pytest.approx(expected), (model, column)


def test_read_history_turns_dvclive_steps_into_epochs(tmp_path):
    train_dir, _ = write_inputs(tmp_path)
    history = read_history(train_dir / "ast_tiny")
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(history["train_loss"]) == LOSSES["ast_tiny"][0]
    assert list(history["valid_loss"]) == LOSSES["ast_tiny"][1]
    assert list(history["valid_map"]) == LOSSES["ast_tiny"][2]
    assert "lr" not in history


# --------------------------------------------------------------------------------------- summary.md

def test_summary_has_a_column_per_model_and_the_reference_experiment(report):
    out, _ = report
    summary = (out / "summary.md").read_text()
    rows = table_rows(summary)
    header_line = next(line for line in summary.splitlines() if line.startswith("|"))
    assert [c.strip() for c in header_line.strip().strip("|").split("|")] == ["", *MODELS]
    assert set(rows) >= {label.strip() for label, _, _ in ROWS}
    assert all(len(cells) == len(MODELS) for cells in rows.values())
    assert rows["effective learning rate"] == ["5.00e-04", "1.00e-04"]
    assert rows["epochs"] == ["3", "3"]
    assert rows["parameters (model as trained)"] == ["4,010,815", "5,410,563"]
    assert rows["min valid loss"] == ["0.3125", "0.1875"]
    assert rows["epochs to within 10% of final valid loss"] == ["2", "3"]
    assert rows["seconds to within 10% of final valid loss"] == ["9", "30"]
    assert rows["valid loss after 1/4, 2/4, 3/4, 4/4 of training"] == ["0.6, 0.312, 0.4, 0.4",
                                                                       "0.5, 0.25, 0.188, 0.188"]
    assert rows["valid chunks (recordings)"] == ["9 (3)", "7 (2)"]
    assert rows["valid mAP [95% interval]"] == ["0.750 [0.500, 0.875]", "0.625 [0.375, 0.812]"]
    assert rows["valid top-1 accuracy"] == ["0.500", "0.375"]
    assert rows["soundscape windows scored (tuning)"] == ["8 (4)", "8 (4)"]
    assert rows["call threshold (tuned on held-out soundscapes)"] == ["0.25", "0.35"]
    assert rows["soundscape row-wise F1 [95% interval]"] == ["0.625 [0.375, 0.875]", "0.500 [0.250, 0.750]"]
    assert rows["all-nocall baseline, F1"] == ["0.500", "0.500"]
    assert rows["soundscape row-wise F1 at 0.5"] == ["0.250", "0.375"]
    assert rows["predicted / true nocall share"] == ["0.25 / 0.50", "0.75 / 0.50"]
    assert rows["inference windows/s"] == ["123.5", "45.2"]
    assert "n/a" not in summary
    assert f"Call threshold: {THRESHOLD_RULE}." in summary
    assert "![loss curves](loss_curves.png)" in summary
    assert "![per-class AP](per_class_ap.png)" in summary
    reference = summary[summary.index("### The reference experiment"):]
    assert "| | EfficientNet-B0 | AST-tiny |" in reference
    assert "| learning rate | 5e-4 | 1e-4 |" in reference
    assert "| min valid loss | 4.07e-4 | 4.16e-4 |" in reference


def test_summary_shows_both_class_prior_baselines(report):
    out, _ = report
    lines = table_lines((out / "summary.md").read_text())
    assert len(lines) == len(ROWS)  # one table row per ROWS entry, in order
    row_of = {column: line[1:] for (_, column, _), line in zip(ROWS, lines)}
    assert row_of["valid_top1_accuracy"] == ["0.500", "0.375"]  # the rows are where ROWS puts them
    assert row_of["baseline_prior_map"] == ["0.312", "0.344"]   # the class prior's valid mAP ...
    assert row_of["baseline_prior_f1"] == ["0.062", "0.125"]    # ... and its soundscape F1
    assert row_of["baseline_nocall_f1"] == ["0.500", "0.500"]


def test_summary_names_the_model_that_converged_faster(report):
    out, _ = report
    summary = (out / "summary.md").read_text()
    (line,) = [line for line in summary.splitlines() if line.startswith("Convergence:")]
    # efficientnet_b0: 2 epochs and 8.75 s; ast_tiny: 3 epochs and 30.25 s.
    assert "efficientnet_b0 came within 10% of its final valid loss after 2 epoch(s) (9 s)" in line
    assert "ast_tiny came within 10% of its final valid loss after 3 epoch(s) (30 s)" in line
    assert line.endswith("efficientnet_b0 converged faster, in epochs and in wall-clock time.")


def test_missing_soundscape_section_gives_n_a(tmp_path):
    train_dir, eval_dir = write_inputs(tmp_path, soundscape=(True, False))
    out = tmp_path / "reports"
    comparison = build_report(list(MODELS), train_dir, eval_dir, out)
    table = pd.read_csv(out / "comparison.csv").set_index("model")
    assert table.loc["efficientnet_b0", "soundscape_row_f1"] == pytest.approx(0.625)
    for column in ("soundscape_row_f1", "soundscape_row_f1_at_0.5", "threshold", "baseline_nocall_f1",
                   "baseline_prior_f1"):
        assert math.isnan(table.loc["ast_tiny", column]), column
    assert table.loc["ast_tiny", "baseline_prior_map"] == pytest.approx(0.34375)
    assert comparison["soundscape_row_f1"].isna().tolist() == [False, True]
    summary = (out / "summary.md").read_text()
    rows = table_rows(summary)
    assert rows["soundscape row-wise F1 [95% interval]"] == ["0.625 [0.375, 0.875]", "n/a"]
    assert rows["soundscape row-wise F1 at 0.5"] == ["0.250", "n/a"]
    assert rows["call threshold (tuned on held-out soundscapes)"] == ["0.25", "n/a"]
    assert rows["all-nocall baseline, F1"] == ["0.500", "n/a"]
    assert rows["valid mAP [95% interval]"] == ["0.750 [0.500, 0.875]", "0.625 [0.375, 0.812]"]  # intact
    # Both rules are named (sorted): the one model's, and that the other had no labelled soundscapes.
    assert f"Call threshold: {THRESHOLD_RULE}; no labelled soundscapes." in summary
    assert_readable_png(out / "loss_curves.png")
    assert_readable_png(out / "per_class_ap.png")


def test_missing_soundscape_shows_no_nan_in_the_summary(tmp_path):
    train_dir, eval_dir = write_inputs(tmp_path, soundscape=(True, False))
    out = tmp_path / "reports"
    build_report(list(MODELS), train_dir, eval_dir, out)
    rows = table_rows((out / "summary.md").read_text())
    present, missing = rows["predicted / true nocall share"]
    assert present == "0.25 / 0.50"
    assert "n/a" in missing
    assert not [label for label, cells in rows.items() if any("nan" in cell.lower() for cell in cells)]


# ---------------------------------------------------------------------------------------- figures

def test_loss_curves_and_per_class_ap_pngs_are_readable_images(report):
    out, _ = report
    assert_readable_png(out / "loss_curves.png")
    assert_readable_png(out / "per_class_ap.png")
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_per_class_ap_figure_has_a_bar_per_model_and_class_with_a_positive(tmp_path, monkeypatch):
    import stages.reporting.figures

    figures = {}
    real_save = stages.reporting.figures.save_png

    def keep(fig, path):
        figures[Path(path).name] = fig
        real_save(fig, path)

    monkeypatch.setattr(stages.reporting.figures, "save_png", keep)
    train_dir, eval_dir = write_inputs(tmp_path)
    build_report(list(MODELS), train_dir, eval_dir, tmp_path / "reports")
    (ax,) = figures["per_class_ap.png"].axes
    # norcar has no valid positive (no AP in either model): left out; classes in classes.txt order.
    assert [label.get_text() for label in ax.get_yticklabels()] == ["amerob", "rewbla"]
    widths = {model: [bar.get_width() for bar in container]
              for model, container in zip([t.get_text() for t in ax.get_legend().get_texts()], ax.containers)}
    assert widths == {"efficientnet_b0": [0.5, 0.25], "ast_tiny": [0.75, 1.0]}
    (loss_ax, map_ax) = figures["loss_curves.png"].axes
    for line in map_ax.get_lines():  # the right panel: valid mAP per epoch, one line per model
        assert list(line.get_ydata()) == LOSSES[line.get_label()][2]
    assert sorted(line.get_label() for line in map_ax.get_lines()) == sorted(MODELS)


# ------------------------------------------------------------------------------------------- CLI

def test_cli_reports_the_models_of_params_yaml_in_their_order(tmp_path):
    write_inputs(tmp_path)
    repo_models = raw_params()["models"]
    reordered = {model: repo_models[model] for model in reversed(MODELS)}  # ast_tiny first
    write_params(tmp_path / "params.yaml", {"models": reordered})
    result = run_stage("stages.report", "--params", "params.yaml", "--train-dir", "reports/train",
                       "--eval-dir", "reports/eval", "--out", "reports", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "reports" / "comparison.csv")
    assert list(table["model"]) == list(reversed(MODELS))
    assert list(yaml.safe_load((tmp_path / "params.yaml").read_text())["models"]) == list(reversed(MODELS))
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert table_rows(summary)["valid mAP [95% interval]"] == ["0.625 [0.375, 0.812]", "0.750 [0.500, 0.875]"]
    assert (tmp_path / "reports" / "loss_curves.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (tmp_path / "reports" / "per_class_ap.png").read_bytes().startswith(PNG_SIGNATURE)


def test_headline_metrics_files_hold_one_entry_per_model(report):
    out, _ = report
    scores = json.loads((out / "scores.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    assert list(scores) == list(timing) == list(MODELS)
    for seed, model in enumerate(MODELS):
        train, evaluated = train_summary(seed), evaluation(seed)
        assert scores[model] == {"mAP": evaluated["valid"]["map"], "F1": evaluated["soundscape"]["row_f1"],
                                 "loss": train["min_valid_loss"], "params": train["params_total"]}
        assert isinstance(scores[model]["params"], int)
        assert timing[model] == {"s_epoch": train["mean_epoch_seconds"],
                                 "train_sps": train["mean_train_samples_per_second"],
                                 "infer_sps": evaluated["inference"]["windows_per_second"]}


def test_headline_numbers_keep_four_significant_digits():
    from stages.reporting.tables import headline_number
    assert headline_number(7.2345e-4) == 7.235e-4
    assert headline_number(0.123456) == 0.1235
    assert headline_number(4_014_658) == 4_014_658
    assert headline_number(float("nan")) is None


def test_plot_files_are_published_one_per_model(report, tmp_path):
    out, _ = report
    for seed, model in enumerate(MODELS):
        curves = pd.read_csv(out / "curves" / f"{model}.csv")
        assert list(curves.columns) == ["epoch", "train_loss", "valid_loss", "valid_map"]
        assert curves["epoch"].tolist() == [1, 2, 3]
        assert (curves["train_loss"].tolist(), curves["valid_loss"].tolist(),
                curves["valid_map"].tolist()) == LOSSES[model]
        for kind, name in (("per_class_ap", "per_class_ap.csv"), ("precision_recall", "precision_recall.json")):
            published = out / kind / f"{model}{Path(name).suffix}"
            assert published.read_bytes() == (tmp_path / "reports" / "eval" / model / name).read_bytes()

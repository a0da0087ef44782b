"""The tables of the report stage (stages/reporting/tables.py and build.py) from hand-written inputs
(report_inputs.py): comparison.csv, the history read from DVCLive, and the table of summary.md. The
figures, headline metrics files, plot files and the CLI: test_report_files.py."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from stages.reporting.build import build_report, read_history
from stages.reporting.tables import ROWS
from report_inputs import (CONVERGENCE, LOSSES, MODELS, THRESHOLD_RULE, assert_readable_png, evaluation,
                           table_lines, table_rows, train_summary, write_inputs)


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
            ("baseline_prior_loss", evaluated["baselines"]["class_prior"]["valid_loss"]),
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


def test_summary_shows_the_class_prior_baselines(report):
    out, _ = report
    lines = table_lines((out / "summary.md").read_text())
    assert len(lines) == len(ROWS)  # one table row per ROWS entry, in order
    row_of = {column: line[1:] for (_, column, _), line in zip(ROWS, lines)}
    assert row_of["valid_top1_accuracy"] == ["0.500", "0.375"]  # the rows are where ROWS puts them
    assert row_of["baseline_prior_loss"] == ["0.75", "0.5"]     # the class prior's valid loss ...
    assert row_of["baseline_prior_map"] == ["0.312", "0.344"]   # ... its valid mAP ...
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

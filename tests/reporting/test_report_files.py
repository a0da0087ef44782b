"""What the report stage writes besides the tables (stages/reporting/build.py, figures.py): readable
PNG figures with a bar per model and class, the headline metrics files `dvc metrics diff` compares,
one plot file per model, and the CLI over the models of params.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from helpers import raw_params, run_stage, write_params
from stages.reporting.build import build_report
from report_inputs import (LOSSES, MODELS, PNG_SIGNATURE, assert_readable_png, evaluation, table_rows,
                           train_summary, write_inputs)


# ---------------------------------------------------------------------------------------- figures

def test_loss_curves_and_per_class_ap_pngs_are_readable_images(report):
    out, _ = report
    assert_readable_png(out / "loss_curves.png")
    assert_readable_png(out / "per_class_ap.png")
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*.tmp*"))


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
    assert [label.get_text() for label in ax.get_yticklabels()] == ["amerob (n=2)", "rewbla (n=1)"]  # positives
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

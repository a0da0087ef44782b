"""Stage background (stages/training/noise_folder.py): the noise folder cut and featurized like the
training chunks, never the evaluation soundscapes; and a run with every recipe element on (crops,
time shift, noise, noise alone, weight averaging, mixup) resumes to the uninterrupted result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stages.background
from stages.core.params import ParamsError
from stages.core.problems import DatasetError
from stages.training.noise_folder import write_noise_features
from train_project import RESUME, TrainRun, assert_same_weights, checkpoint, curves, run_main

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")
EVERYTHING = {**RESUME, "train.chunks_per_recording": 2, "train.time_shift_frames": 8, "train.ema_decay": 0.9,
              "train.background_probability": 0.5, "train.nocall_probability": 0.2,
              "train.background_snr_db": [0.0, 10.0]}


def test_every_clip_is_cut_into_chunks_and_featurized_like_training_chunks(project):
    chunks = pd.read_csv(project.background / "chunks.csv")
    index = pd.read_csv(project.background / "index.csv")
    features = np.load(project.background / "features.npy", mmap_mode="r")
    assert len(chunks) == len(index) == len(features) and index["valid"].all()
    assert features.shape[1:] == np.load(project.features / "features.npy", mmap_mode="r").shape[1:]
    clips = sorted(path.name for path in Path(project.params().train.background).iterdir())
    assert sorted(chunks["path"].unique()) == clips and len(clips) == 5
    # 5 s clips in 1 s chunks: five each, one second apart, every one full.
    assert chunks.groupby("path")["start_s"].apply(tuple).unique().tolist() == [(0.0, 1.0, 2.0, 3.0, 4.0)]
    assert (chunks["audio_s"] == 1.0).all()
    assert np.isfinite(features).all() and float(np.std(features.astype(np.float32))) > 0.1


@pytest.mark.parametrize("where", ["train_soundscapes", "test_soundscapes", "."])
def test_the_evaluation_soundscapes_are_refused_as_noise(project, tmp_path, where):
    root = project.params().data.root
    params = project.params({"train.background": f"{root}/{where}"})
    with pytest.raises(ParamsError, match="train.background: .*the evaluation soundscapes"):
        write_noise_features(params, tmp_path / "out", tmp_path / "report.json")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_usable_audio_stops_with_its_report_written(project, tmp_path):
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "broken.ogg").write_bytes(b"not audio")
    params_file = project.write_params(tmp_path / "params.yaml", {"train.background": str(tmp_path / "noise")})
    with pytest.raises(DatasetError, match="train.background: no usable audio in"):
        run_main(stages.background.main, "--params", params_file, "--out", tmp_path / "out",
                 "--report", tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["chunks"] == 0 and report["skipped"][0]["file"].endswith("broken.ogg")
    assert not (tmp_path / "out").exists()


def test_a_run_with_every_element_on_resumes_to_the_uninterrupted_result(project, tmp_path, monkeypatch):
    reference = TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "reference", EVERYTHING)
    plain = TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "plain", RESUME)
    assert plain["min_train_loss"] != reference["min_train_loss"]  # the elements change the run
    stopped = TrainRun(monkeypatch, stop_after_epoch=1)
    assert stopped(project, "efficientnet_b0", tmp_path / "resumed", EVERYTHING) is None
    resumed_run = TrainRun(monkeypatch)
    resumed_run(project, "efficientnet_b0", tmp_path / "resumed", EVERYTHING)
    assert resumed_run.resumed_epochs == [1] and resumed_run.epochs_trained == [2]
    ref, res = checkpoint(tmp_path / "reference" / "last.pt"), checkpoint(tmp_path / "resumed" / "last.pt")
    assert_same_weights(res["model"], ref["model"])
    assert_same_weights(res["ema"], ref["ema"])
    assert curves(res["history"]) == curves(ref["history"])
    assert "2 random chunk(s) per recording" in reference["augmentation"]


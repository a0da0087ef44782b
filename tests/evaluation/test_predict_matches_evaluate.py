"""The route from a trained model to answers: its bundle (card written as stage evaluate writes it,
model.onnx as stage export does) run by predict on the labelled soundscapes gives exactly evaluate's
submission at the same threshold: the torch backend computes the very same features, the ONNX one
(numpy front end) the same labels from scores within float32 rounding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import read_classes
from stages.evaluate import tuned_threshold
from stages.export import check_rows
from stages.inference.bundle import make_card, read_bundle, write_card
from stages.inference.export import export_onnx
from stages.inference.run import Predictor, predict_files
from stages.inference.backends import load_backend
from stages.inference.submission import competition_table
from stages.audio.files import find_audio

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(evaluated):
    model, params, prepared, features, checkpoint, _, result = evaluated
    card = make_card(model, params.models[model], params.data, params.features, read_feature_stats(features),
                     read_classes(prepared), tuned_threshold(result), checkpoint)
    write_card(checkpoint.parent, card)
    bundle = read_bundle(checkpoint.parent)
    export_onnx(bundle, check_rows(features, 9))
    return bundle


def predicted(bundle, backend: str, root):
    predictor = Predictor([bundle], load_backend(backend, 1, "cpu", 16), 16)
    run = predict_files(find_audio(root / "train_soundscapes"), root / "train_soundscapes", predictor, strict=True)
    return run, competition_table(run.files, predictor.classes, bundle.card.threshold.value)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_reproduces_evaluates_submission(evaluated, bundle, demo_root, backend):
    expected = pd.read_csv(evaluated[5] / "submission.csv")
    _, table = predicted(bundle, backend, demo_root)
    assert len(table) == len(expected) == 8  # two 20 s soundscapes
    merged = expected.merge(table, on="row_id", suffixes=("_evaluate", "_predict"))
    assert len(merged) == len(expected)
    assert merged["birds_evaluate"].tolist() == merged["birds_predict"].tolist()


def test_both_backends_give_the_same_scores(bundle, demo_root):
    torch_run, torch_table = predicted(bundle, "torch", demo_root)
    onnx_run, onnx_table = predicted(bundle, "onnx", demo_root)
    assert torch_table.equals(onnx_table)
    torch_scores = np.concatenate([f.scores for f in torch_run.files])
    onnx_scores = np.concatenate([f.scores for f in onnx_run.files])
    # The ONNX backend's numpy front end differs from featurize's in float32 rounding (a float16 step
    # in well under 1% of the log-mel values): scores agree to about 1e-4.
    assert np.abs(torch_scores - onnx_scores).max() < 1e-3

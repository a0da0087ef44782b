"""Fixtures of the evaluation tests: the prepared tiny demo, and each model trained for one epoch and
evaluated (built once per module)."""

from __future__ import annotations

import pytest

from evaluated_models import MODELS, small_data
from stages.evaluation.run import evaluate
from stages.training.loop import TrainPaths, train


@pytest.fixture(scope="module")
def data(demo_root, tmp_path_factory):
    return small_data(demo_root, tmp_path_factory.mktemp("eval_data"), {})


@pytest.fixture(scope="module", params=MODELS)
def evaluated(request, data, tmp_path_factory):
    """One model trained for one epoch and evaluated: (model, params, dirs, result)."""
    params, prepared, features = data
    model = request.param
    work = tmp_path_factory.mktemp(f"eval_{model}")
    train(params, model, prepared, features,
          TrainPaths(work / "model", work / "live", work / "resume"))
    checkpoint = work / "model" / "best.pt"
    result = evaluate(params, model, prepared, features, checkpoint, work / "eval")
    return model, params, prepared, features, checkpoint, work / "eval", result

"""stage export: model.onnx reproduces PyTorch for every architecture and batch size, and an export
that cannot be checked is not written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bundle_files import feature_rows, make_bundle
from stages.inference.export import MAX_LOGIT_DIFF, ExportError, export_onnx
from stages.inference.onnx_scorer import OnnxScorer
from stages.inference.torch_scorer import TorchScorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", ["efficientnet_b0", "ast_tiny"])
def test_the_export_round_trips_at_any_batch_size(tmp_path, arch):
    bundle = make_bundle(tmp_path / arch, arch=arch)
    report = export_onnx(bundle, feature_rows(5))
    assert report.max_abs_logit_diff <= MAX_LOGIT_DIFF and report.rows_checked == 5 and report.opset == 18
    assert json.loads((bundle.folder / "export.json").read_text())["max_abs_logit_diff"] == report.max_abs_logit_diff
    torch_scores, onnx_scores = TorchScorer(bundle, torch.device("cpu"), 8), OnnxScorer(bundle, 1)
    for batch in (1, 3, 8):
        rows = feature_rows(batch, seed=batch).astype(np.float32)
        assert np.allclose(onnx_scores(rows), torch_scores(rows), atol=1e-5)


def test_check_rows_of_other_features_stop_the_export_before_anything_is_written(tmp_path):
    bundle = make_bundle(tmp_path / "efficientnet_b0")
    with pytest.raises(ExportError, match=r"check rows are \[2, 64, 101\].*\[n, 32, 101\]"):
        export_onnx(bundle, np.zeros((2, 64, 101), dtype=np.float16))
    assert not bundle.onnx.exists()
    assert sorted(p.name for p in bundle.folder.iterdir()) == ["best.pt", "card.json"]

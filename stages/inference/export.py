"""model.onnx for a bundle: the network of `bundle_network` (normalisation included) exported with a
dynamic batch dimension, then checked against PyTorch on real feature rows before it is kept.

The check runs both on the same float16-valued log-mels and refuses the export when any logit
differs by more than MAX_LOGIT_DIFF; the file is written under a temporary name and renamed only
once it passed. Its metadata names the weights it came from, so a later stage can refuse a stale one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from stages.core.atomic import atomic_path, write_json
from stages.inference.bundle import EXPORT_REPORT_FILE, Bundle
from stages.inference.onnx_scorer import ONNX_INPUT, ONNX_OUTPUT, ONNX_WEIGHTS_KEY
from stages.inference.torch_scorer import bundle_network

# The ONNX operator set: 18 is what torch's exporter targets natively in torch 2.11 and what ONNX
# Runtime >= 1.14 runs; Kaggle's images carry newer.
OPSET = 18
# Largest |logit| difference between ONNX Runtime and PyTorch an export may show (float32 both ways:
# measured differences are ~1e-6).
MAX_LOGIT_DIFF = 1e-3
# Feature rows the check runs: an odd count, so a batch size the export never saw is tried too.
CHECK_ROWS = 17


class ExportError(ValueError):
    """The exported network does not reproduce PyTorch's, or its check rows do not fit it."""


@dataclass(frozen=True)
class ExportReport:
    opset: int
    rows_checked: int
    max_abs_logit_diff: float
    tolerance: float
    seconds: float
    torch_version: str
    onnx_version: str
    onnxruntime_version: str


def export_onnx(bundle: Bundle, rows: np.ndarray) -> ExportReport:
    """Write bundle/model.onnx (and export.json) from bundle/best.pt; `rows`: float16 log-mels
    [n, n_mels, n_frames] the check compares both runtimes on."""
    card = bundle.card
    expected = (card.mel.n_mels, card.n_frames)
    if rows.ndim != 3 or rows.shape[1:] != expected or len(rows) == 0:
        raise ExportError(f"the check rows are {list(rows.shape)}, but the bundle's network takes [n, {expected[0]}, "
                          f"{expected[1]}]: they come from other feature settings than {bundle.folder}'s")
    started = time.perf_counter()
    network = bundle_network(bundle)
    x = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    with torch.no_grad():
        reference = network(x).numpy()
    with atomic_path(bundle.onnx) as tmp:
        _export(network, x[:2], tmp, card.weights_sha256)
        session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        exported = session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]
        diff = float(np.abs(exported - reference).max())
        if not diff <= MAX_LOGIT_DIFF:  # NaN fails too
            raise ExportError(f"ONNX Runtime's logits differ from PyTorch's by up to {diff:.3g} on {len(rows)} feature "
                              f"rows (allowed: {MAX_LOGIT_DIFF:g}); model.onnx was not written. Please report it "
                              f"with the architecture ({card.arch}) and the torch/onnxruntime versions.")
    report = ExportReport(OPSET, len(rows), diff, MAX_LOGIT_DIFF, round(time.perf_counter() - started, 2),
                          torch.__version__, onnx.__version__, onnxruntime.__version__)
    write_json(bundle.folder / EXPORT_REPORT_FILE, asdict(report))
    return report


def _export(network: torch.nn.Module, example: torch.Tensor, path: Path, weights_sha256: str) -> None:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(network, (example,), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, verbose=False)
    model = program.model_proto
    onnx.helper.set_model_props(model, {ONNX_WEIGHTS_KEY: weights_sha256})
    onnx.save_model(model, str(path))

"""The ONNX Runtime backend of stage predict: model.onnx (stage export: normalisation + network) run
on float32 log-mels [batch, n_mels, frames], giving sigmoid scores [batch, classes]. numpy and
onnxruntime only: no torch, no timm."""

from __future__ import annotations

import numpy as np
import onnxruntime
import scipy.special

from stages.inference.bundle import CARD_FILE, ONNX_FILE, Bundle, BundleError

# model.onnx's metadata: the weights it was exported from, checked against the card.
ONNX_WEIGHTS_KEY = "weights_sha256"
ONNX_INPUT, ONNX_OUTPUT = "logmel", "logits"


class OnnxScorer:
    """model.onnx in ONNX Runtime on the CPU, with `threads` intra-op threads."""

    def __init__(self, bundle: Bundle, threads: int):
        path = bundle.onnx
        if not path.is_file():
            raise BundleError(f"{bundle.folder}: no {ONNX_FILE}. Export it first: python -m stages.export "
                              f"--model {bundle.folder} (or `dvc repro export@<model>`), or use --backend torch.")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]}). Export it again: "
                              f"python -m stages.export --model {bundle.folder}") from None
        exported_from = self.session.get_modelmeta().custom_metadata_map.get(ONNX_WEIGHTS_KEY)
        if exported_from != bundle.card.weights_sha256:
            raise BundleError(f"{path} was exported from other weights than {bundle.weights} (stale export). Export it "
                              f"again: python -m stages.export --model {bundle.folder}")
        outputs = self.session.get_outputs()[0].shape[-1]
        if outputs != len(bundle.card.classes):
            raise BundleError(f"{path} has {outputs} outputs but {CARD_FILE} lists {len(bundle.card.classes)} classes. "
                              f"Export it again: python -m stages.export --model {bundle.folder}")

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        logits = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(mels, dtype=np.float32)})[0]
        return scipy.special.expit(logits).astype(np.float32)

"""The two ways stage predict runs a bundle's network: PyTorch (`TorchScorer`) or ONNX Runtime
(`OnnxScorer`, model.onnx from stage export). Both take float32 log-mels [batch, n_mels, frames] as
featurize stores them (float16 values) and return sigmoid scores [batch, classes]; the normalisation
is part of the network (`bundle_network`), so ONNX Runtime needs nothing else from the pipeline.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import scipy.special
import torch

from stages.inference.bundle import CARD_FILE, ONNX_FILE, Bundle, BundleError
from stages.models.factory import create_model
from stages.models.registry import family_of
from stages.training.augment import Normalise
from stages.training.checkpoints import CheckpointError, load_best_weights, read
from stages.training.recipe import CPU_AUTO, CUDA_AUTO, Recipe, prepare_model, step_context

BACKENDS = ("torch", "onnx")
# model.onnx's metadata: the weights it was exported from, checked against the card.
ONNX_WEIGHTS_KEY = "weights_sha256"
ONNX_INPUT, ONNX_OUTPUT = "logmel", "logits"


def bundle_network(bundle: Bundle) -> torch.nn.Module:
    """Normalisation + the trained model, in eval mode on the CPU: what model.onnx holds."""
    card = bundle.card
    state = read(bundle.weights, "Re-run `dvc repro train@<model>`.")
    trained = state.get("classes") or []
    if trained != card.classes:
        raise BundleError(f"{bundle.folder / CARD_FILE} lists {len(card.classes)} classes but {bundle.weights} was "
                          f"trained on {len(trained)} (or in another order): the folder mixes two models. Re-run "
                          "`dvc repro evaluate@<model>` to write the card of these weights.")
    model = create_model(card.arch, len(card.classes), card.mel.n_mels, card.n_frames, False, card.options)
    try:
        load_best_weights(bundle.weights, model, card.arch, card.classes)
    except CheckpointError as err:
        raise BundleError(f"bundle {bundle.folder}: {err}") from None
    return torch.nn.Sequential(Normalise(card.mean, card.std), model).eval()


class TorchScorer:
    """The bundle's network in PyTorch, on `device`, in the recipe evaluate uses by default there."""

    def __init__(self, bundle: Bundle, device: torch.device, batch_size: int):
        precision, channels_last = (CUDA_AUTO if device.type == "cuda" else CPU_AUTO)[family_of(bundle.card.arch)]
        self.recipe = Recipe(precision, channels_last, False, batch_size)
        self.device = device
        network = bundle_network(bundle).to(device)
        self.network = prepare_model(network, self.recipe)

    @torch.no_grad()
    def __call__(self, mels: np.ndarray) -> np.ndarray:
        with step_context(self.device, self.recipe):
            logits = self.network(torch.from_numpy(mels).to(self.device))
        return torch.sigmoid(logits.float()).cpu().numpy()


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


def make_scorer(bundle: Bundle, backend: str, device: torch.device, threads: int, batch_size: int):
    if backend == "onnx":
        return OnnxScorer(bundle, threads)
    return TorchScorer(bundle, device, batch_size)

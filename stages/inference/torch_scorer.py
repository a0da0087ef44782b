"""The PyTorch backend of stage predict: the bundle's network (normalisation + the trained model,
`bundle_network`, also what stage export exports) run on float32 log-mels [batch, n_mels, frames]
as featurize stores them (float16 values), giving sigmoid scores [batch, classes]."""

from __future__ import annotations

import numpy as np
import torch

from stages.inference.bundle import CARD_FILE, Bundle, BundleError
from stages.models.factory import create_model
from stages.models.registry import family_of
from stages.training.augment import Normalise
from stages.training.checkpoints import CheckpointError, load_best_weights, read
from stages.training.recipe import CPU_AUTO, CUDA_AUTO, Recipe, prepare_model, step_context


def bundle_network(bundle: Bundle) -> torch.nn.Module:
    """Normalisation + the trained model, in eval mode on the CPU: what model.onnx holds."""
    card = bundle.card
    try:
        state = read(bundle.weights, "Re-run `dvc repro train@<model>`.")
    except CheckpointError as err:
        raise BundleError(str(err)) from None
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

"""Scores of a trained model on the chunks of one split, timed, with the training recipe's precision."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from stages.training.augment import Normalise
from stages.training.batches import BatchReader
from stages.training.recipe import Recipe, step_context


@dataclass(frozen=True)
class Predictions:
    scores: np.ndarray   # [n, classes] sigmoid scores, in split order
    seconds: float       # time spent in the forward passes, device synchronised


@torch.no_grad()
def predict(model, reader: BatchReader, normalise: Normalise, recipe: Recipe, n_classes: int,
            desc: str | None = None) -> Predictions:
    """Scores of every chunk of `reader`'s split, with the training recipe's precision."""
    model.eval()
    device = reader.device
    scores = torch.zeros((reader.n_chunks, n_classes), dtype=torch.float32)
    seconds = 0.0
    for batch in tqdm(reader.batches(), total=len(reader), desc=desc, unit="batch", disable=desc is None):
        started = time.perf_counter()
        with step_context(device, recipe):
            logits = model(normalise(batch.x))
        scores[torch.from_numpy(batch.positions)] = torch.sigmoid(logits.float()).cpu()  # .cpu() waits for the GPU
        seconds += time.perf_counter() - started
    return Predictions(scores.numpy(), seconds)

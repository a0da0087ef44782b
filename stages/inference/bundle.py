"""A model bundle: the folder models/<model>/ holding everything inference needs, and nothing more.

    best.pt      the trained weights (stage train), with their architecture and class list
    card.json    what the weights need around them (stage evaluate): the format and its version, the
                 architecture and options, the class list, the audio and log-mel settings, the
                 normalisation statistics, and the call threshold with what it was tuned on
    model.onnx   optional (stage export): the same network for ONNX Runtime, normalisation included

`read_bundle` checks the pieces against each other, so that a folder that mixes two models, a card of
another format version, or a missing piece fails with a message saying which file and what to do.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stages.audio.store import FeatureStats
from stages.core.atomic import write_json
from stages.core.params import DataParams, FeatureParams, ModelParams, n_frames

BUNDLE_FORMAT = "birdclef-ast-pipeline model bundle"
# Raised whenever a field changes meaning or is removed; readers refuse any other version.
BUNDLE_VERSION = 1
CARD_FILE = "card.json"
WEIGHTS_FILE = "best.pt"
ONNX_FILE = "model.onnx"
EXPORT_REPORT_FILE = "export.json"
# The competition's window; the row ids name its end second.
WINDOW_SECONDS = 5.0
# Where no labelled soundscape tuned the call threshold: the sigmoid's midpoint.
UNTUNED_THRESHOLD = 0.5
REBUILD = "Re-run `dvc repro evaluate@<model>` (it writes card.json beside best.pt)"


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class MelSettings:
    """The log-mel front end the weights were trained on (features in params.yaml, less the knobs
    of how featurize runs); CpuLogMel and LogMel take it where they take FeatureParams."""
    n_mels: int
    n_fft: int
    win_ms: float
    hop_ms: float
    fmin: float
    fmax: float

    def hop_length(self, sample_rate: int) -> int:
        return round(sample_rate * self.hop_ms / 1000)

    def win_length(self, sample_rate: int) -> int:
        return round(sample_rate * self.win_ms / 1000)


@dataclass(frozen=True)
class AudioSettings:
    sample_rate: int
    chunk_seconds: float           # what the model sees, centred on each 5 s window
    min_remainder_seconds: float   # a shorter tail gets no window; a longer one is zero-padded

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * self.sample_rate)


@dataclass(frozen=True)
class Threshold:
    value: float
    tuned_on: str | None           # what it was chosen on; None: untuned (no labelled soundscapes)
    row_f1: float | None           # the soundscape row-wise F1 it reached on the files it did not tune on


@dataclass(frozen=True)
class Card:
    model_name: str
    arch: str
    options: dict[str, Any]
    classes: list[str]
    audio: AudioSettings
    mel: MelSettings
    n_frames: int
    mean: float
    std: float
    threshold: Threshold
    weights_sha256: str

    def as_json(self) -> dict:
        return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, **asdict(self)}


@dataclass(frozen=True)
class Bundle:
    folder: Path
    card: Card

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_FILE

    @property
    def onnx(self) -> Path:
        return self.folder / ONNX_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_card(model_name: str, mp: ModelParams, data: DataParams, fp: FeatureParams, stats: FeatureStats,
              classes: list[str], threshold: Threshold, weights: Path) -> Card:
    mel = MelSettings(fp.n_mels, fp.n_fft, fp.win_ms, fp.hop_ms, fp.fmin, fp.fmax)
    audio = AudioSettings(data.sample_rate, data.chunk_seconds, data.min_remainder_seconds)
    frames = n_frames(audio.chunk_samples, mel.hop_length(audio.sample_rate))
    return Card(model_name, mp.arch, dict(mp.options), list(classes), audio, mel, frames, stats.mean, stats.std,
                threshold, file_sha256(weights))


def write_card(folder: Path, card: Card) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / CARD_FILE, card.as_json())


def read_bundle(folder: Path) -> Bundle:
    """The bundle in `folder`, its card checked against its weights file (not the weights' values:
    the torch backend loads those and checks them against the class list)."""
    if not folder.is_dir():
        raise BundleError(f"{folder}: not a folder. --model takes a bundle folder such as models/efficientnet_b0")
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise BundleError(f"{folder}: no {CARD_FILE}, so not a complete model bundle. {REBUILD}.")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, ValueError) as err:
        raise BundleError(f"{card_path}: unreadable ({err}). {REBUILD}.") from None
    if not isinstance(raw, dict) or raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{card_path}: not a model card of this pipeline (no \"format\": {BUNDLE_FORMAT!r}).")
    if raw.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{card_path}: bundle format version {raw.get('format_version')!r}, but this code reads "
                          f"version {BUNDLE_VERSION}. Use the pipeline version that wrote it, or {REBUILD[0].lower()}"
                          f"{REBUILD[1:]} with this one.")
    card = _parse_card(raw, card_path)
    bundle = Bundle(folder, card)
    if not bundle.weights.is_file():
        raise BundleError(f"{folder}: no {WEIGHTS_FILE} beside {CARD_FILE}. Re-run `dvc repro train@<model>` "
                          "(or copy the whole folder, not the card alone).")
    if file_sha256(bundle.weights) != card.weights_sha256:
        raise BundleError(f"{bundle.weights} is not the checkpoint {CARD_FILE} describes (its sha256 differs): the "
                          f"folder mixes two trainings. {REBUILD}.")
    return bundle


def _parse_card(raw: dict, path: Path) -> Card:
    try:
        return Card(
            model_name=str(raw["model_name"]), arch=str(raw["arch"]), options=dict(raw["options"]),
            classes=[str(code) for code in raw["classes"]], audio=AudioSettings(**raw["audio"]),
            mel=MelSettings(**raw["mel"]), n_frames=int(raw["n_frames"]), mean=float(raw["mean"]),
            std=float(raw["std"]), threshold=Threshold(**raw["threshold"]), weights_sha256=str(raw["weights_sha256"]))
    except (KeyError, TypeError, ValueError) as err:
        raise BundleError(f"{path}: a field is missing or malformed ({type(err).__name__}: {err}). "
                          f"{REBUILD}.") from None

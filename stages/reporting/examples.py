"""reports/spectrograms.png: one example log-mel chunk per species, as the models see them.

For each class (in classes.txt order, at most MAX_SPECIES) the first decodable training chunk whose
primary label it is, drawn with librosa.display.specshow on the mel frequency axis, so a reader can
check that species differ and that features look like bird calls rather than noise or silence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import librosa.display
import numpy as np
import pandas as pd

from stages.birdclef.prepared import load_split, read_classes
from stages.core.params import FeatureParams
from stages.reporting.figures import plt, save_png

MAX_SPECIES = 12   # a 3 x 4 grid stays legible; BirdCLEF's 397 classes would not


COLUMNS = 3


def example_rows(prepared_dir: Path, features_dir: Path, classes: list[str]) -> dict[str, int]:
    """Class -> feature row of its first training chunk (classes without one are left out)."""
    train = load_split(prepared_dir, features_dir, "train")
    examples = {}
    for row, label in zip(train.feature_rows, train.labels["primary_label"]):
        if label in classes[:MAX_SPECIES] and label not in examples:
            examples[label] = int(row)
    return {code: examples[code] for code in classes if code in examples}


@dataclass(frozen=True)
class ExampleDetail:
    audio_s: float     # seconds of real audio in the chunk; the rest of it is zero padding
    secondary: str     # the recording's secondary labels as prepare parsed them, "" for none


def example_details(prepared_dir: Path, rows: dict[str, int]) -> dict[str, ExampleDetail]:
    """What a panel's title and marks need beyond the log-mel: its real audio length and the other
    species the recording carries (two panels that look alike often share one)."""
    chunks = pd.read_csv(prepared_dir / "chunks.csv", keep_default_na=False).set_index("chunk_id")
    labels = pd.read_csv(prepared_dir / "labels.csv", keep_default_na=False).set_index("target_row")
    details = {}
    for code, row in rows.items():  # a feature row is its chunk's id
        chunk = chunks.loc[row]
        details[code] = ExampleDetail(float(chunk["audio_s"]),
                                      str(labels.loc[chunk["target_row"], "secondary_labels"]).strip())
    return details


def plot_examples(features: np.ndarray, rows: dict[str, int], sample_rate: int, hop_length: int,
                  fmin: float, fmax: float, path: Path, details: dict[str, ExampleDetail] | None = None) -> None:
    n_rows = math.ceil(len(rows) / COLUMNS)
    fig, axes = plt.subplots(n_rows, COLUMNS, figsize=(4.2 * COLUMNS, 2.8 * n_rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(rows):]:
        ax.set_axis_off()
    mels = {code: np.asarray(features[row], dtype=np.float32) for code, row in rows.items()}
    # One colour scale for every panel: the single colorbar must be true for all of them.
    vmin, vmax = min(m.min() for m in mels.values()), max(m.max() for m in mels.values())
    for ax, (code, mel) in zip(axes.flat, mels.items()):
        image = librosa.display.specshow(mel, sr=sample_rate, hop_length=hop_length, x_axis="time", y_axis="mel",
                                         fmin=fmin, fmax=fmax, ax=ax, cmap="magma", vmin=vmin, vmax=vmax)
        ax.set_xlabel("time (s)")
        detail = (details or {}).get(code)
        ax.set_title(code if detail is None or not detail.secondary else f"{code} (also: {detail.secondary})")
        chunk_s = mel.shape[1] * hop_length / sample_rate
        if detail is not None and detail.audio_s < chunk_s - hop_length / sample_rate:
            ax.axvline(detail.audio_s, color="white", linestyle="--", linewidth=1)
            ax.text(detail.audio_s, 0.95, " zero padding", color="white", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8)
    fig.colorbar(image, ax=axes, label="log-mel (natural log of power)", shrink=0.6)
    fig.suptitle("One training chunk per species (log-mel, as stored in data/features)")
    save_png(fig, path)


def plot_species_examples(prepared_dir: Path, features_dir: Path, sample_rate: int, fp: FeatureParams,
                          out: Path) -> int:
    """Draw reports/spectrograms.png; returns how many species it shows."""
    rows = example_rows(prepared_dir, features_dir, read_classes(prepared_dir))
    features = np.load(features_dir / "features.npy", mmap_mode="r")
    plot_examples(features, rows, sample_rate, fp.hop_length(sample_rate), fp.fmin, fp.fmax, out,
                  example_details(prepared_dir, rows))
    return len(rows)

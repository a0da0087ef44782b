"""The training recipe's elements as `make ablations` experiments: each alone and all together, for
both models (the recipe set; bench/ablations.py queues and collects it).

- crops: recordings cut into chunks 2.5 s apart (up to 8, not 3 chunks 5 s apart), of which each
  epoch draws 3 per recording at random, each rolled by up to 0.5 s (`train.time_shift_frames`);
  an epoch then costs about what it did, but its pieces change from epoch to epoch.
- noise: background noise (`train.background`) mixed into half the training chunks at 0-20 dB SNR,
  and a tenth replaced by noise alone with no target.
- ema: the weights' moving average (`train.ema_decay`).
- crops-noise: params.yaml's defaults; all: the three together.

Every experiment sets every element's keys, so a row means what its name says whatever params.yaml's
defaults are. The valid split follows the chunking (2.5 s apart gives more valid chunks), so valid
mAP compares within a chunking; the soundscape windows are the same in every row.
"""

from __future__ import annotations

PREFIX = "rec-"
OFF = {
    "data.hop_seconds": 5.0, "data.max_chunks_per_recording": 3, "train.chunks_per_recording": "all",
    "train.time_shift_frames": 0, "train.background_probability": 0.0, "train.nocall_probability": 0.0,
    "train.ema_decay": 0.0,
}
ELEMENTS = {
    "crops": {"data.hop_seconds": 2.5, "data.max_chunks_per_recording": 8, "train.chunks_per_recording": 3,
              "train.time_shift_frames": 50},
    "noise": {"train.background_probability": 0.5, "train.nocall_probability": 0.1},
    "ema": {"train.ema_decay": 0.9},
}


# params.yaml's defaults, chosen from this set: crops and noise, no weight average (on runs this short
# the average lags the weights; docs/results.md).
DEFAULT = ("crops", "noise")


def recipe_variants() -> dict[str, dict[str, object]]:
    """Experiment name -> `-S` overrides: none, each element alone, the default pair, all of them."""
    found = {f"{PREFIX}none": dict(OFF)}
    for name, on in ELEMENTS.items():
        found[f"{PREFIX}{name}"] = {**OFF, **on}
    for names in (DEFAULT, tuple(ELEMENTS)):
        found[PREFIX + ("all" if names == tuple(ELEMENTS) else "-".join(names))] = {
            **OFF, **{key: value for name in names for key, value in ELEMENTS[name].items()}}
    return found


def recipe_rows(name: str, data: dict) -> list[dict]:
    """One row per model of an experiment's `dvc exp show --json` entry."""
    metrics = data["metrics"]
    rows = []
    for model in data["params"]["params.yaml"]["data"]["models"]:
        scores = metrics["reports/scores.json"]["data"][model]
        soundscape = metrics["reports/soundscape.json"]["data"][model]
        rows.append({"experiment": name, "model": model, "valid_mAP": scores["mAP"],
                     "soundscape_F1": scores["F1"], "F1_low": soundscape["F1_low"], "F1_high": soundscape["F1_high"],
                     "F1_all_nocall": soundscape["F1_all_nocall"], "nocall_predicted": soundscape["nocall_predicted"],
                     "nocall_true": soundscape["nocall_true"],
                     "s_per_epoch": metrics["reports/timing.json"]["data"][model]["s_epoch"]})
    return rows

"""The soundscape hold-out goes by the file each window was cut from, never by the row id's text: with
row ids in another format (here every id shares one prefix), the threshold must still be tuned on
some files and scored on the others. Before, this case tuned and scored on the same windows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers import make_params
from stages.birdclef.prepared import SplitData
from stages.evaluation.run import score_soundscapes

CLASSES = ["amerob", "norcar"]


def soundscapes(row_ids: list[str]) -> SplitData:
    files = [f"train_soundscapes/{n}_SSW_20200601.ogg" for n in (1, 1, 1, 2, 2, 2, 3, 3, 4, 4)]
    birds = ["amerob", "nocall", "norcar", "nocall", "amerob", "nocall", "norcar", "nocall", "amerob", "nocall"]
    labels = pd.DataFrame({"item_id": row_ids, "birds": birds, "path": files})
    return SplitData(np.arange(len(files)), np.zeros((len(files), 2), np.float32), labels)


def test_windows_are_held_out_by_file_whatever_their_row_ids_say():
    ep = make_params().evaluate
    scores = np.random.default_rng(0).random((10, 2))
    standard = soundscapes([f"{n}_SSW_{5 * k}" for n, k in zip((1, 1, 1, 2, 2, 2, 3, 3, 4, 4), (1, 2, 3) * 3 + (1,))])
    odd = soundscapes(["window"] * 10)  # one shared prefix: parsing the ids would see one file
    results = [score_soundscapes(split, scores, CLASSES, ep, seed=0) for split in (standard, odd)]
    for result in results:
        assert result.metrics["windows_tune"] + result.metrics["windows_scored"] == 10
        assert result.metrics["windows_tune"] < 10  # never tuned and scored on the same windows
        assert "2 of 4 labelled soundscape files" in result.metrics["threshold_rule"]
    assert results[0].metrics == results[1].metrics  # the ids' text changes nothing

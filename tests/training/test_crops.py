"""train.chunks_per_recording: each epoch draws that many of a recording's chunks at random,
deterministically per (seed, epoch), covering every recording; the schedule counts the steps the
loop really takes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import error_for, raw_params, set_key
from stages.birdclef.prepared import SplitData
from stages.training.crops import EpochCrops
from train_project import TrainRun, checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread", "outside_the_repo")
CHUNKS_OF = {"a.ogg": 1, "b.ogg": 3, "c.ogg": 5, "d.ogg": 8}  # chunks per recording


def split_of(chunks_of: dict[str, int]) -> SplitData:
    paths = [path for path, count in chunks_of.items() for _ in range(count)]
    rows = np.arange(len(paths))
    return SplitData(rows, np.zeros((len(paths), 2), np.float32), pd.DataFrame({"path": paths}))


def drawn(per_recording, seed: int) -> np.ndarray:
    torch.manual_seed(seed)
    return EpochCrops(split_of(CHUNKS_OF), per_recording).draw().numpy()


def test_each_recording_gives_its_share_without_repeats():
    paths = split_of(CHUNKS_OF).labels["path"].to_numpy()
    for seed in range(20):
        chosen = drawn(3, seed)
        assert len(set(chosen)) == len(chosen) == 1 + 3 + 3 + 3
        assert pd.Series(paths[chosen]).value_counts().to_dict() == {"a.ogg": 1, "b.ogg": 3, "c.ogg": 3, "d.ogg": 3}
    assert EpochCrops(split_of(CHUNKS_OF), 3).size == 10


def test_the_draw_is_fixed_by_the_seed_and_changes_between_epochs():
    assert np.array_equal(drawn(2, seed=7), drawn(2, seed=7))
    draws = {tuple(sorted(drawn(2, seed))) for seed in range(10)}
    assert len(draws) > 5  # the chunks themselves change, not only their order
    covered = set(np.concatenate([drawn(2, seed) for seed in range(60)]))
    assert covered == set(range(sum(CHUNKS_OF.values())))  # every chunk of every recording comes up


def test_all_is_the_plain_permutation_of_every_chunk():
    torch.manual_seed(3)
    expected = torch.randperm(sum(CHUNKS_OF.values())).numpy()
    assert np.array_equal(drawn("all", seed=3), expected)


def test_the_schedule_counts_the_steps_an_epoch_of_crops_really_takes(project, tmp_path, monkeypatch):
    overrides = {"train.chunks_per_recording": 1, "train.epochs": 2, "train.warmup_epochs": 0.5}
    TrainRun(monkeypatch)(project, "efficientnet_b0", tmp_path / "out", overrides)
    labels = pd.read_csv(project.prepared / "chunks.csv")
    recordings = labels[labels["split"] == "train"]["path"].nunique()
    batch = project.params().train.batch_size
    steps = 2 * -(-recordings // batch)  # one chunk per recording, the short last batch trained too
    state = checkpoint(tmp_path / "out" / "last.pt")
    assert state["scheduler"]["last_epoch"] == steps
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {steps}
    # The cosine reaches 0 exactly at the last step, so the schedule and the loop agree.
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("value", [0, -1, "some", 1.5])
def test_a_count_that_is_not_all_or_a_positive_integer_is_refused(value):
    assert "train.chunks_per_recording" in error_for(set_key(raw_params(), "train.chunks_per_recording", value))

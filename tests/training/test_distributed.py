"""stages/training/distributed.py and the data-parallel batching of stages/training/batches.py: which
global batches are trained, each rank's share of them, validation slices, the collectives in a real
2-process gloo world, and the world read from torchrun's variables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing

import world_ranks
from stages.birdclef.prepared import SplitData
from stages.training.batches import BatchReader, trained_batches
from stages.training.distributed import (SINGLE, World, WorldError, launch, resolve_processes,
                                         world_from_env)

TWO = [World(0, 2, 0, 2), World(1, 2, 1, 2)]


@pytest.mark.parametrize("n_chunks, batch_size, world_size, expected", [
    (18, 4, 1, 5),   # a world of one trains every batch, the last short one too
    (17, 4, 2, 4),   # a last batch of 1 chunk cannot give 2 ranks one each: dropped
    (18, 4, 2, 5),   # a last batch of 2: one chunk per rank
    (8, 4, 2, 2),
    (0, 4, 2, 0),
])
def test_trained_batches_drop_only_a_last_batch_shorter_than_the_world(n_chunks, batch_size, world_size, expected):
    assert trained_batches(n_chunks, batch_size, World(0, world_size, 0, world_size)) == expected


def reader(tmp_path, n_chunks: int, batch_size: int) -> BatchReader:
    features = tmp_path / "features.npy"
    np.save(features, np.arange(n_chunks, dtype=np.float16)[:, None, None] * np.ones((1, 2, 3), np.float16))
    rows = np.arange(n_chunks)[::-1].copy()  # split order differs from file order
    split = SplitData(feature_rows=rows, targets=np.eye(n_chunks, dtype=np.float32), labels=pd.DataFrame())
    return BatchReader(features, split, batch_size, torch.device("cpu"))


def test_ranks_share_each_global_batch_without_overlap_and_weights_add_up(tmp_path):
    batches = reader(tmp_path, 11, 5)  # global batches of 5, 5 and 1: the last is dropped for 2 ranks
    order = np.random.default_rng(0).permutation(11)
    shares = [list(batches.batches(order, world)) for world in TWO]
    assert [len(s) for s in shares] == [2, 2]
    for number, (a, b) in enumerate(zip(*shares)):
        expected = order[number * 5:(number + 1) * 5]
        assert sorted([*a.positions, *b.positions]) == sorted(expected)
        assert sorted([len(a.positions), len(b.positions)]) == [2, 3]  # near-equal shares
        assert a.global_size == b.global_size == 5
        # The weights the trainer gives each share average to 1: the single-process gradient.
        assert (len(a.y) * 2 / a.global_size + len(b.y) * 2 / b.global_size) / 2 == pytest.approx(1)
        for batch in (a, b):  # each rank reads its own chunks' features and targets
            assert torch.equal(batch.y, batches.targets[batch.positions])
            assert batch.x[:, 0, 0].tolist() == batches.split.feature_rows[batch.positions].tolist()
    single = list(batches.batches(order))
    assert [len(b.positions) for b in single] == [5, 5, 1] and all(b.global_size == len(b.y) for b in single)


@pytest.mark.parametrize("n, size", [(9, 2), (3, 4), (0, 2), (10, 1)])
def test_validation_slices_cover_the_split_once_in_order(n, size):
    bounds = World(0, size, 0, size).slice_bounds(n)
    assert len(bounds) == size and bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


def test_collectives_in_a_real_two_process_gloo_world(tmp_path):
    launch(2, (), world_ranks.collectives, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["world"] for r in ranks] == [(0, 2, 0, 2), (1, 2, 1, 2)]
    expected = torch.tensor([[0., 1.], [2., 3.], [4., 5.], [100., 101.]])  # 3 + 1 rows, no padding left
    for seen in ranks:
        assert torch.equal(seen["gathered"], expected)
        assert seen["total"].item() == 3.0
        assert seen["running_mean"].tolist() == [0.5, 0.5]
        assert seen["num_batches_tracked"].item() == 5


def test_a_failing_rank_ends_the_world_with_its_error(tmp_path):
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match="rank 1 fails on purpose"):
        launch(2, (), world_ranks.failing, tmp_path)  # a bug: its traceback comes along


def test_a_rank_stopped_by_a_user_error_prints_its_message_alone(tmp_path, capfd):
    with pytest.raises(WorldError, match="rank 1 of 2 stopped on the error above"):
        launch(2, (ValueError,), world_ranks.failing, tmp_path)
    err = capfd.readouterr().err
    assert "error: rank 1 fails on purpose" in err and "Traceback" not in err


def test_the_world_comes_from_torchruns_variables(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert world_from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    world = world_from_env()
    assert world == World(5, 8, 1, 4) and world.distributed and not world.is_main
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(WorldError, match="RANK=8 of WORLD_SIZE=8"):
        world_from_env()
    monkeypatch.delenv("RANK")
    with pytest.raises(WorldError, match="set RANK, WORLD_SIZE"):
        world_from_env()


def test_processes_resolve_to_the_visible_gpus(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_processes("auto", cpu) == 1 and resolve_processes(3, cpu) == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_processes("auto", cuda) == 4 and resolve_processes(2, cuda) == 2
    with pytest.raises(WorldError, match="train.processes: 5 processes need as many GPUs, torch sees 4"):
        resolve_processes(5, cuda)
    assert SINGLE.is_main and not SINGLE.distributed

"""What the distributed tests run inside a real 2-process gloo world (started by
stages.training.distributed.launch, which pickles these functions by name): each rank writes what
it saw to `<out>/rank<r>.pt` for the test to compare."""

from __future__ import annotations

from pathlib import Path

import torch

from stages.training.distributed import (average_buffers, gather_slices, process_group, sum_across,
                                         world_from_env)


def collectives(out: Path) -> None:
    """gather_slices, sum_across and average_buffers on rank-dependent values."""
    torch.set_num_threads(1)
    world = world_from_env()
    with process_group(world, torch.device("cpu")):
        counts = [3, 1]  # uneven: rank 0 holds 3 rows, rank 1 one
        rows = torch.arange(counts[world.rank] * 2, dtype=torch.float32).reshape(-1, 2) + 100 * world.rank
        gathered = gather_slices(rows, world, counts)
        total = sum_across(torch.tensor(float(world.rank + 1), dtype=torch.float64), world)
        norm = torch.nn.BatchNorm1d(2)
        norm.running_mean.fill_(float(world.rank))  # rank 0: 0, rank 1: 1
        norm.num_batches_tracked.fill_(5)
        average_buffers(norm, world)
        torch.save({"world": (world.rank, world.size, world.local_rank, world.local_size), "gathered": gathered,
                    "total": total, "running_mean": norm.running_mean.clone(),
                    "num_batches_tracked": norm.num_batches_tracked.clone()}, out / f"rank{world.rank}.pt")


def failing(out: Path) -> None:
    """Rank 1 fails at once; rank 0 would wait for it forever at a collective."""
    world = world_from_env()
    if world.rank == 1:
        raise ValueError("rank 1 fails on purpose")
    with process_group(world, torch.device("cpu")):
        sum_across(torch.zeros(()), world)

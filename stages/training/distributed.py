"""Data-parallel training with torch.distributed: one process per GPU (NCCL) or per CPU slot (gloo).

The world is read from the standard variables that `torchrun` sets (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT; under SLURM, export them from SLURM_PROCID and friends).
When none is set and `train.processes` asks for more than one, the train stage starts the processes
itself (`launch`) with the same variables, so both routes run the same code. A world of one has no
process group and no wrapper: it is the single-process path, bit for bit.

What every rank does alike, so that collectives line up: the same global batches in the same order
(stages/training/batches.py gives each rank its share), the same number of optimizer steps, and
validation on its own contiguous slice of the split, gathered without padding duplicates.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing

from stages.core import cli

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies
# A rank waits this long for the others at a collective before failing (instead of hanging forever).
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
# Each rank's augmentation stream: seeded apart from the shared (seed, epoch) stream by this stride.
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0   # this process's GPU on its node
    local_size: int = 1   # processes on this node: they share its CPU cores

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, DVCLive, progress lines and the resume state."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def slice_bounds(self, n: int) -> list[tuple[int, int]]:
        """Contiguous, near-equal [begin, end) slices of `n` items, one per rank (some may be empty)."""
        edges = np.linspace(0, n, self.size + 1).round().astype(int)
        return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


SINGLE = World()


class WorldError(ValueError):
    """The distributed environment or `train.processes` does not describe a usable world."""


def world_from_env() -> World | None:
    """The world torchrun (or a hand-set environment) describes, or None outside one."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    except (KeyError, ValueError) as err:
        raise WorldError(f"WORLD_SIZE is set but the distributed environment is incomplete or not numeric "
                         f"({err}); set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, as torchrun "
                         "does") from None
    if not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise WorldError(f"RANK={rank} of WORLD_SIZE={size} (LOCAL_RANK={local_rank} of {local_size}) is out of range")
    return World(rank, size, local_rank, local_size)


def resolve_processes(setting: int | str, device: torch.device) -> int:
    """train.processes resolved: a number as given; `auto` is the visible GPUs (1 on the CPU)."""
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    processes = (gpus or 1) if setting == "auto" else int(setting)
    if device.type == "cuda" and processes > gpus:
        raise WorldError(f"train.processes: {processes} processes need as many GPUs, torch sees {gpus} "
                         "(CUDA_VISIBLE_DEVICES narrows them); use auto or at most that number")
    return processes


def rank_device(device: torch.device, world: World) -> torch.device:
    """This rank's device: its own GPU on a CUDA node (by LOCAL_RANK), else the CPU."""
    if device.type != "cuda" or not world.distributed:
        return device
    gpu = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(gpu)
    return gpu


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """The process group of `world` for the duration of the block (nothing for a world of one)."""
    if not world.distributed:
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://",
                            rank=world.rank, world_size=world.size, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(step_model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """`step_model` (already compiled, if the recipe compiles) in DistributedDataParallel.

    Buffers are not broadcast at each forward: ranks average them once per epoch instead
    (`average_buffers`), so a rank's forward never waits for another's.
    """
    if not world.distributed:
        return step_model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def sum_across(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def average_buffers(model: torch.nn.Module, world: World) -> None:
    """BatchNorm running statistics averaged over the ranks (identical already under SyncBatchNorm),
    so every rank validates, and rank 0 saves, one model."""
    if not world.distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(world.size)


def gather_slices(local: torch.Tensor, world: World, counts: list[int]) -> torch.Tensor:
    """Every rank's rows (rank r holds `counts[r]` of them), concatenated in rank order on every rank.

    Collectives need equal shapes, so each slice travels padded to the longest and is cut back to
    its true length: no row is duplicated or lost.
    """
    if not world.distributed:
        return local
    longest = max(counts)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, user_errors: tuple[type[BaseException], ...], run: Callable[..., None], *args) -> None:
    """Run `run(*args)` in `processes` local processes forming one world, as torchrun would.

    Each process is ended when this one dies (even by SIGKILL), and this one when its own parent
    (`dvc`) dies, so a killed `dvc repro` leaves no rank behind writing outputs; when one rank
    fails, torch.multiprocessing ends the others. A rank stopped by one of `user_errors` prints its
    message alone (no traceback); any other error keeps its traceback.
    """
    die_with_parent(os.getppid())
    try:
        torch.multiprocessing.start_processes(
            _rank_main, args=(processes, free_port(), os.getpid(), user_errors, run, args),
            nprocs=processes, join=True, start_method="spawn")
    except torch.multiprocessing.ProcessExitedException as err:
        if err.exit_code != cli.USER_ERROR_EXIT:
            raise
        raise WorldError(f"rank {err.error_index} of {processes} stopped on the error above") from None


def _rank_main(local_rank: int, processes: int, port: int, parent_pid: int,
               user_errors: tuple[type[BaseException], ...], run: Callable[..., None], args: tuple) -> None:
    die_with_parent(parent_pid)
    os.environ.update(RANK=str(local_rank), WORLD_SIZE=str(processes), LOCAL_RANK=str(local_rank),
                      LOCAL_WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cli.run(functools.partial(run, *args), *user_errors)  # a user error: its message, exit USER_ERROR_EXIT


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)

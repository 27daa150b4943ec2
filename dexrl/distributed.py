"""One process per GPU under ``torchrun``: ranks, the process group, devices, seeds and summed counts.

``torchrun --nproc_per_node=N -m dexrl COMMAND ...`` starts N copies of a command and tells each its place
through environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, plus the rendezvous address). Without
them a command is a single process of rank 0 in a world of one, and every helper here is a no-op, so the
commands behave as before.

The commands that scale out (``synth``, ``train-gqcnn``, ``eval-planner``, ``eval``) run under
:func:`session`: it joins the process group (NCCL on GPUs, gloo on the CPU or when ranks share a GPU),
picks this rank's device, and leaves the group at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "SINGLE_PROCESS", "Rank", "all_gather_objects", "all_reduce_sum", "barrier", "current_rank", "device_for", "session",
    "shares_gpus",
]

GROUP_TIMEOUT = timedelta(hours=1)
"""How long a rank waits at a collective for the others, e.g. at the end of synthesis for the rank that writes
the last shard (the defaults of 10-30 minutes are short for a long shard)."""


@dataclass(frozen=True)
class Rank:
    """This process's place in the job: ``rank`` in ``[0, world_size)`` and ``local_rank``, its index on its
    machine (the GPU it owns)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the files that exist once per job (manifest, checkpoints, result tables)."""
        return self.rank == 0

    def share(self, count: int) -> range:
        """This rank's items of ``count`` numbered work items (shards, batches): those with ``i % world_size ==
        rank``. Every item belongs to exactly one rank, whatever the world size."""
        return range(self.rank, count, self.world_size)

    def seed(self, seed: int) -> int:
        """A seed of this rank's own random stream: ``seed`` itself on rank 0 (so a one-process run is rank 0
        of any run), 63-bit seeds derived from ``(seed, rank)`` (distinct in practice) on the others."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1, np.uint64)[0] >> 1)


SINGLE_PROCESS = Rank()
"""Rank 0 of a world of one: the default of every function that takes a rank."""


def current_rank() -> Rank:
    """The rank torchrun's environment variables describe; rank 0 of 1 when they are absent."""
    return Rank(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def device_for(rank: Rank, requested: str | None) -> str | None:
    """The device this rank computes on. One process: ``requested`` unchanged (None: the command's default).
    Several: ``cpu`` when the CPU is requested, else the local rank's GPU, ``cuda:(LOCAL_RANK % GPUs)``, so that
    a ``--device cuda:0`` given to every rank does not pile them all onto one GPU, and more ranks than GPUs
    share them evenly."""
    if rank.world_size == 1 or requested == "cpu":
        return requested
    if requested is None and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{rank.local_rank % max(1, torch.cuda.device_count())}"


def shares_gpus() -> bool:
    """Whether this machine runs more ranks than it has GPUs (``LOCAL_WORLD_SIZE``, set by torchrun): NCCL
    refuses two ranks on one GPU, so such a job joins through gloo."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > torch.cuda.device_count()


@contextmanager
def session(requested_device: str | None) -> Iterator[tuple[Rank, str | None]]:
    """Join the process group for the duration of a command: yields this process's rank and its device (see
    :func:`device_for`). NCCL when each rank has a GPU of its own, gloo on the CPU or when ranks share GPUs
    (:func:`shares_gpus`); nothing to join for a single process."""
    rank = current_rank()
    device = device_for(rank, requested_device)
    if rank.world_size == 1 or dist.is_initialized():
        yield rank, device
        return
    on_gpu = device is not None and device.startswith("cuda")
    if on_gpu:
        torch.cuda.set_device(device)  # NCCL and collectives on CUDA tensors use the current device
    nccl = on_gpu and not shares_gpus()
    dist.init_process_group("nccl" if nccl else "gloo", timeout=GROUP_TIMEOUT)
    try:
        yield rank, device
        # Every rank done before any tears the group down. Once in CI (2026-12-04) a gloo rank aborted at the
        # end of a job ("terminate called without an active exception"); the ranks ended out of step, as
        # only rank 0 writes files. That they caused it is a guess; ending together is the cheap guard.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed element-wise over all ranks, in place (e.g. outcome counts (K,) long); unchanged for a
    single process. Works on any device under either backend (a tensor on the other kind travels through a
    copy: the current GPU for NCCL, the host for gloo)."""
    if not _joined():
        return tensor
    on_gpu = dist.get_backend() == "nccl"
    if (tensor.device.type == "cuda") == on_gpu:
        dist.all_reduce(tensor)
    else:
        moved = tensor.cuda() if on_gpu else tensor.cpu()
        dist.all_reduce(moved)
        tensor.copy_(moved)
    return tensor


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order; ``[value]`` for a single process."""
    if not _joined():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    """Wait until every rank gets here (no-op for a single process)."""
    if _joined():
        dist.barrier()

r"""Data-parallel training under ``torchrun``: this process's rank, the process group, sums and row orders.

:func:`strnn_fast.fit` trains data-parallel when ``torchrun`` started it (``WORLD_SIZE`` > 1): it
joins the process group (NCCL on CUDA, Gloo on the CPU), each rank takes its share of every
epoch's rows, and the NLL sums are reduced so that every rank stops and raises together.

Example:
    >>> world()  # a plain process
    (0, 1)
    >>> epoch_order(5, seed=0, epoch=0, distributed=False).sort().values.tolist()
    [0, 1, 2, 3, 4]
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["all_sum", "close", "epoch_order", "is_main_process", "setup", "world"]


def world() -> tuple[int, int]:
    r"""Returns ``(rank, world_size)`` of this process: from torch.distributed, else torchrun's env.

    Example:
        >>> world()
        (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is rank 0 (the one that prints and writes files)."""
    return world()[0] == 0


def setup(device: torch.device | str | None) -> tuple[bool, torch.device | None]:
    """Joins torchrun's process group when there is one; returns (created_here, device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False, (torch.device(device) if device is not None else None)
    use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
    if use_cuda and device is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True, (torch.device(device) if device is not None else None)


def close() -> None:
    """Leaves the process group that :func:`setup` created."""
    dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device, distributed: bool) -> list[float]:
    """The sums of ``values`` over the ranks (``values`` itself in a plain process)."""
    if not distributed:
        return values
    # nccl reduces only CUDA tensors; gloo only CPU ones.
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(t)
    return t.tolist()


def epoch_order(n: int, seed: int, epoch: int, distributed: bool) -> torch.Tensor:
    """Row order of one epoch: a seeded permutation, this rank's share of it under DDP."""
    if distributed:
        sampler = torch.utils.data.DistributedSampler(range(n), shuffle=True, seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
        return torch.tensor(list(sampler), dtype=torch.long)
    # Same generator and seed as DistributedSampler: one process with batch k*b sees the same
    # batches as k ranks with batch b each.
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)

"""Multi-process data parallelism: ``torchrun --nproc_per_node=N -m sj_bwsnn train RECIPE``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` starts the
process group (NCCL on CUDA, gloo on CPU) and returns this process's device. The trainer wraps
the model in ``DistributedDataParallel``, shards data with ``DistributedSampler``, sums metrics
over ranks with :func:`all_sum`, and only rank 0 prints bars and writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun group if ``WORLD_SIZE > 1``; returns the device this rank should use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (identity for a single process)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

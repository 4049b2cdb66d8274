"""Multi-process data parallelism: ``torchrun --nproc_per_node=N -m sj_bwsnn train RECIPE``.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init_distributed` starts the
process group (NCCL on CUDA, gloo on CPU) and returns this process's device. Each of the ``W``
ranks trains on its shard of every batch (``DistributedSampler``-style sharding), metrics are
summed over ranks with :func:`all_sum`, and only rank 0 prints bars and writes files.

Every training method gets DDP's gradient: before each optimizer step every rank holds
``g = (1/W) * sum_r g_r``, the mean of the ranks' gradients (:func:`data_parallel`):

- a method whose only call into the model is one ``model(x)`` per batch (``bptt``, ``dsr``)
  trains through ``DistributedDataParallel``, whose reducer averages gradients during backward;
- step-wise methods (``sltt``, ``sltt_k``, ``ottt``, ``sltt_fused``) call ``model.forward_seq``
  and would bypass the wrapper's forward, so they train the bare model: rank 0's parameters and
  buffers are broadcast once (as DDP's constructor does) and :func:`average_gradients` runs in
  :meth:`Precision.step <sj_bwsnn.engine.precision.Precision.step>` before unscaling, clipping
  and the step (once per update: per time step for online OTTT).

Buffers (BatchNorm running statistics) follow rank 0 in both cases: DDP copies rank 0's into
every rank at each forward, and the trainer broadcasts them before every evaluation, so all ranks
evaluate the model rank 0 saves. Train-mode BatchNorm normalises with each rank's own batch.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 25 * 2**20  # DDP's default bucket_cap_mb


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun group if ``WORLD_SIZE > 1`` (once per process; later calls only answer);
    returns the device this rank should use: ``cuda:LOCAL_RANK`` for any CUDA device under
    torchrun (a recipe's ``cuda:0`` would otherwise put every rank on GPU 0), else ``device``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device, **_attempt_store())
        else:
            dist.init_process_group("gloo", **_attempt_store())
    return device


def _attempt_store() -> dict:
    """Under torchrun, the process group's store keys prefixed by the restart attempt.

    torchrun's agent keeps one key-value store for all attempts of a job (``--max-restarts``), so
    a restarted worker could read the address a dead worker of the previous attempt published and
    wait for it ("Gloo connectFullMesh failed ... Connection refused", or a hang); a prefix per
    ``TORCHELASTIC_RESTART_COUNT`` gives every attempt fresh keys. Empty outside torchrun."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return {}
    from torch.distributed.rendezvous import rendezvous

    store, rank, world_size = next(rendezvous("env://"))
    return dict(store=dist.PrefixStore(f"sj_bwsnn/attempt_{attempt}", store), rank=rank,
                world_size=world_size)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all ranks (identity for a single process)."""
    if world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def first_nonzero(value: int, device: torch.device) -> int:
    """The smallest nonzero ``value`` over ranks (0 if every rank has 0); identity for one process.

    The trainer's non-finite-loss check: every rank must stop at the same step with the same
    message, or the ranks still training would wait in their next collective until it times out.
    """
    if world()[1] == 1:
        return value
    big = torch.iinfo(torch.long).max
    t = torch.tensor([value or big], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return 0 if int(t) == big else int(t)


def _coalesced(tensors: list[torch.Tensor], collective: Callable[[torch.Tensor], None]) -> None:
    """Run ``collective`` in place on ``tensors`` through flat buffers of at most
    :data:`BUCKET_BYTES` (one dtype and device each), then copy the results back. Every rank
    must pass tensors of the same shapes in the same order."""
    groups: dict[tuple, list[list[torch.Tensor]]] = {}  # (device, dtype) -> buckets
    sizes: dict[tuple, int] = {}
    for t in tensors:
        key, nbytes = (t.device, t.dtype), t.numel() * t.element_size()
        buckets = groups.setdefault(key, [])
        if not buckets or sizes[key] + nbytes > BUCKET_BYTES:
            buckets.append([])
            sizes[key] = 0
        buckets[-1].append(t)
        sizes[key] += nbytes
    for bucket in (b for buckets in groups.values() for b in buckets):
        flat = _flatten_dense_tensors(bucket)
        collective(flat)
        for dst, src in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            dst.copy_(src)


@torch.no_grad()
def broadcast_state(module: torch.nn.Module, parameters: bool = True) -> None:
    """Overwrite every rank's buffers (and, with ``parameters``, its parameters) with rank 0's;
    a no-op for a single process."""
    if world()[1] == 1:
        return
    tensors = [p.data for p in module.parameters()] if parameters else []
    _coalesced(tensors + list(module.buffers()), functools.partial(dist.broadcast, src=0))


@torch.no_grad()
def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average gradients over ranks as DDP's reducer does. Contract: afterwards every rank holds

        p.grad = (1/W) * sum_r g_r(p)

    for every parameter ``p`` (``requires_grad``) that has a gradient on at least one rank, where
    a rank whose ``p.grad`` is ``None`` contributes ``g_r(p) = 0`` (and gets a gradient); a
    parameter without a gradient on every rank keeps ``None``, so the optimizer skips it
    everywhere. Identity for a single process. Every rank must pass the same parameters in the
    same order (``model.parameters()`` of identical models); dense gradients only.
    """
    W = world()[1]
    params = [p for p in params if p.requires_grad]
    if W == 1 or not params:
        return
    held = torch.tensor([p.grad is not None for p in params], dtype=torch.int32,
                        device=params[0].device)
    dist.all_reduce(held)  # ranks holding each gradient
    grads = []
    for p, n in zip(params, held.tolist()):
        if n and p.grad is None:
            p.grad = torch.zeros_like(p)
        if n:
            grads.append(p.grad)

    def mean(flat: torch.Tensor) -> None:
        flat.div_(W)  # divide first, as DDP does: the sum cannot overflow in half precision
        dist.all_reduce(flat)

    _coalesced(grads, mean)


def data_parallel(model: torch.nn.Module, device: torch.device, single_forward: bool):
    """``(net, grad_sync)`` for training ``model`` on this rank (module docstring).

    Single process: ``(model, None)``. ``single_forward`` (the method calls only ``net(x)``):
    ``(DistributedDataParallel(model), None)``; DDP's constructor broadcasts rank 0's state.
    Otherwise rank 0's parameters and buffers are broadcast here and the result is
    ``(model, grad_sync)``, ``grad_sync()`` averaging the gradients of ``model``'s parameters
    (:func:`average_gradients`); pass it to :class:`~sj_bwsnn.engine.precision.Precision`.
    """
    if world()[1] == 1:
        return model, None
    if single_forward:
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), None
    broadcast_state(model)
    return model, functools.partial(average_gradients, list(model.parameters()))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

"""Activation memory of training, measured on any device: what autograd keeps alive for backward.

Peak GPU memory (``torch.cuda.max_memory_allocated``) needs CUDA and mixes weights, optimizer state,
workspace and allocator rounding into one number. The part that grows with the number of time steps
T is what autograd saves for backward: inputs of convolutions, BatchNorm statistics, surrogate
arguments, binarized weights. :class:`SavedActivationMeter` measures exactly that, on the CPU too:

    live(now) = sum of nbytes over distinct storages of tensors currently saved for backward
    peak      = max over the measured block of live(now)

Every tensor saved inside the block (``ctx.save_for_backward`` and the built-in ops alike) passes
through ``torch.autograd.graph.saved_tensors_hooks``; the meter wraps it in a holder whose lifetime
is the saved variable's (freed when backward releases the graph, or when the graph is dropped), so a
storage counts from its first save to the release of its last. Storages are counted whole, once,
whatever number of views of them is saved. Storages of the tensors in ``exclude`` (the model's
parameters and buffers: they exist whether or not a graph does) are left out.

Not counted: tensors a method holds outside autograd (OTTT's presynaptic traces, one input-sized
tensor per traced layer whatever T), gradients, optimizer state and temporaries freed during forward.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch


def _key(t: torch.Tensor) -> tuple:
    storage = t.untyped_storage()
    return (t.device.type, t.device.index, storage.data_ptr()), storage.nbytes()


class _Held:
    """One saved tensor; releases its storage's count in the meter when autograd drops it."""

    __slots__ = ("tensor", "meter", "key")

    def __init__(self, tensor: torch.Tensor, meter: "SavedActivationMeter", key: Optional[tuple]):
        self.tensor, self.meter, self.key = tensor, meter, key

    def __del__(self):
        if self.key is not None:
            self.meter._release(self.key)


class SavedActivationMeter:
    """Context manager: ``peak_bytes`` of tensors saved for backward inside the block (module docstring).

    >>> meter = SavedActivationMeter(exclude=model.parameters())
    >>> with meter:
    ...     method.train_step(model, x, y, objective, optimizer)
    >>> meter.peak_bytes
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {_key(t)[0] for t in exclude}
        self._count: dict[tuple, list[int]] = {}  # storage key -> [saved references, nbytes]
        self.live_bytes = 0
        self.peak_bytes = 0
        self._hooks = None

    def _pack(self, tensor: torch.Tensor) -> _Held:
        # hold a detached alias (same storage): a saved *output* held as itself would keep its own
        # grad_fn alive, a cycle through C++ that Python cannot collect when a graph is dropped
        tensor = tensor.detach()
        key, nbytes = _key(tensor)
        if key in self._excluded:
            return _Held(tensor, self, None)
        entry = self._count.get(key)
        if entry is None:
            self._count[key] = [1, nbytes]
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        else:
            entry[0] += 1
        return _Held(tensor, self, key)

    @staticmethod
    def _unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def _release(self, key: tuple) -> None:
        entry = self._count[key]
        entry[0] -= 1
        if entry[0] == 0:
            del self._count[key]
            self.live_bytes -= entry[1]

    def __enter__(self) -> "SavedActivationMeter":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

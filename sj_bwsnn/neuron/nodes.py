"""Multi-step LIF / IF nodes with a backend switch.

Membrane dynamics (SpikingJelly's), per time step ``t``::

    LIF, decay_input=True :  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau
    LIF, decay_input=False:  H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]
    IF                    :  H[t] = V[t-1] + X[t]
    S[t] = Heaviside(H[t] - V_th)            (surrogate gradient in backward)
    hard reset (v_reset float): V[t] = H[t] * (1 - S[t]) + V_reset * S[t]
    soft reset (v_reset None) : V[t] = H[t] - V_th * S[t]

``backend``:

* ``'torch'`` — SpikingJelly's own multi-step path (its Triton kernel on CUDA when it applies,
  else its Torch reference).
* ``'cupy'``  — sj_bwsnn's fused CuPy kernel (:mod:`sj_bwsnn.neuron.fused`); CUDA tensors in
  fp32 / fp16 / bf16 only, needs CuPy and one of SpikingJelly's built-in surrogates with a float alpha.
  The membrane state ``v`` is then kept in fp32 whatever the input dtype.
* ``'auto'``  — ``'cupy'`` for CUDA input when CuPy imports and the kernel supports the configuration,
  else ``'torch'``.

``temporal_grad=False`` drops the temporal gradient path: ``V[t-1]`` enters step ``t`` detached,
so ``dL/dV[t-1] = 0`` through ``H[t]`` (the SLTT / OTTT gradient; the forward is unchanged).

State ``v`` carries across calls until ``functional.reset_net``.
"""

from __future__ import annotations

import torch
from spikingjelly.activation_based import neuron as sj_neuron

from ..errors import UserError
from . import fused

BACKENDS = ("auto", "cupy", "torch")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UserError(f"neuron backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


_CUPY_OK: bool | None = None


@torch.compiler.assume_constant_result
def _cupy_available() -> bool:
    """Whether CuPy imports (probed once per process; a failed import is slow to repeat).

    Probed eagerly: when a node with backend ``auto`` / ``cupy`` is built on a machine with CUDA, and
    by :func:`check_backend_available`. Traced code (``torch.compile``) then only reads the cached
    answer; were the first probe to happen while tracing, the decorator makes Dynamo run it as plain
    Python and use its result as a constant, instead of tracing an import that can fail
    (``Unsupported: Import failure`` under ``fullgraph=True`` on a CUDA machine without CuPy)."""
    global _CUPY_OK
    if _CUPY_OK is None:
        try:
            import cupy  # noqa: F401
        except Exception:
            _CUPY_OK = False
        else:
            _CUPY_OK = True
    return _CUPY_OK


def check_backend_available(backend: str, device: torch.device | str) -> None:
    """Raise the one-line error ``backend='cupy'`` would give on ``device``, before any forward (for
    ``'auto'`` on CUDA: probe CuPy now, outside any traced code)."""
    if backend == "auto" and torch.device(device).type == "cuda":
        _cupy_available()
    if backend != "cupy":
        return
    if torch.device(device).type != "cuda":
        raise UserError(
            f"neuron backend 'cupy' needs CUDA tensors, got a {torch.device(device).type} tensor; "
            "use backend: auto (or torch) to run on the CPU"
        )
    if not _cupy_available():
        raise UserError(
            "neuron backend 'cupy' needs CuPy: pip install 'sj-bwsnn[cuda]' (cupy-cuda12x), "
            "or use backend: auto"
        )


class _BackendMixin:
    """Chooses the multi-step implementation per call (see the module docstring)."""

    backend: str
    temporal_grad: bool

    def __init__(self, *args, backend: str = "auto", temporal_grad: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = _check_backend(backend)
        self.temporal_grad = bool(temporal_grad)
        if self.backend != "torch" and _CUPY_OK is None and torch.cuda.is_available():
            _cupy_available()  # probe now, not in the first (possibly compiled) forward

    def reset(self):
        """SpikingJelly's ``reset`` (each state back to its reset value, ``v_seq`` cleared), without its
        per-attribute machinery when the reset values are numbers, as for LIF / IF (``reset_net``
        runs this for every neuron of every training step)."""
        memories = self._memories
        for key, value in self._memories_rv.items():
            if type(value) is not float and type(value) is not int:
                return super().reset()
            memories[key] = value
        if self.__dict__.get("v_seq") is not None:
            self.v_seq = None

    def __getstate__(self):
        """Copies and pickles leave out the cached kernel plan (rebuilt on the next call)."""
        state = super().__getstate__()
        if "_sjb_plan" in state:
            state = {k: v for k, v in state.items() if k != "_sjb_plan"}
        return state

    def forward(self, *args, **kwargs):
        """SpikingJelly's ``forward`` (single or multi-step by ``step_mode``), one call shorter."""
        if self._step_mode == "m":
            return self.multi_step_forward(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def _dispatch(self, x: torch.Tensor) -> str:
        """``'cupy'`` or ``'torch'`` for a multi-step call on ``x`` (the rules of the module docstring;
        raises the one-line error when ``backend='cupy'`` cannot run here)."""
        backend = self.backend
        if backend == "auto":
            if x.is_cuda and _cupy_available() and fused.kernel_spec(self, x)[0] is not None:
                return "cupy"
            return "torch"
        if backend == "cupy":
            check_backend_available("cupy", x.device)
            return "cupy"  # a configuration the kernel lacks is refused in fused.py
        return "torch"

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        backend = self.backend
        if backend == "torch" or (backend == "auto" and not x_seq.is_cuda):
            return self._torch_multi_step(x_seq, *args, **kwargs)
        if torch.compiler.is_compiling():  # the decision is traced; the kernels run in custom ops
            if self._dispatch(x_seq) == "cupy":
                return fused.multi_step(self, x_seq)
            return self._torch_multi_step(x_seq, *args, **kwargs)
        plan = fused.plan_for(self, x_seq)  # cached per node, rebuilt when an attribute changes
        if plan.use_fused is None:  # decided (with the device check) once per plan
            plan.use_fused = self._dispatch(x_seq) == "cupy"
        if plan.use_fused:
            return fused.run(self, x_seq, plan)
        return self._torch_multi_step(x_seq, *args, **kwargs)

    def _torch_multi_step_no_temporal(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Reference multi-step forward with ``V[t-1]`` detached at every step."""
        states = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        spikes, v_steps = [], []
        for t in range(x_seq.shape[0]):
            states = (states[0].detach(), *states[1:])
            (spike,), states = self.single_step_functional_forward((x_seq[t],), states)
            spikes.append(spike)
            v_steps.append(states[0])
        for name, value in zip(self._memories, states):
            self._memories[name] = value
        self.v_seq = torch.stack(v_steps) if self.store_v_seq else None
        return torch.stack(spikes)

    def _torch_multi_step(self, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.temporal_grad:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        return self._torch_multi_step_no_temporal(x_seq)

    def resolved_backend(self, x: torch.Tensor) -> str:
        """The backend a multi-step call on ``x`` uses."""
        return self._dispatch(x)

    def extra_repr(self) -> str:
        extra = "" if self.temporal_grad else ", temporal_grad=False"
        return super().extra_repr() + f", backend={self.backend}{extra}"


class LIFNode(_BackendMixin, sj_neuron.LIFNode):
    """SpikingJelly 2.0 ``LIFNode`` plus ``backend='auto'|'cupy'|'torch'`` and ``temporal_grad``."""


class IFNode(_BackendMixin, sj_neuron.IFNode):
    """SpikingJelly 2.0 ``IFNode`` plus ``backend='auto'|'cupy'|'torch'`` and ``temporal_grad``."""

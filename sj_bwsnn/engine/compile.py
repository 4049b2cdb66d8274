"""``torch.compile`` for training runs: the recipe keys ``train.compile`` and ``train.compile_fullgraph``.

``train.compile`` is ``off`` (default) or a ``torch.compile`` mode: ``default``, ``reduce-overhead``
(CUDA graphs on a GPU; on the CPU the same as ``default``) or ``max-autotune``;
``train.compile_fullgraph: true`` turns every graph break into a compile failure.

**What is compiled.** A training method declares it with ``compile_entry``, the name of the model
method it calls (:mod:`sj_bwsnn.engine.methods`): ``'forward'`` (``bptt`` and ``dsr`` with the loss
on the mean: one ``model(x)`` per batch, through DDP's wrapper under torchrun) or ``'forward_seq'``
(``bptt`` / ``dsr`` with ``loss_on: per_step``, ``sltt_fused``: the whole multi-step forward;
``sltt``, ``sltt_k``, ``ottt``: the per-step forward, called T times per batch). A method without
``compile_entry`` is refused with one line naming its ``compile_refusal``, by
:func:`~sj_bwsnn.engine.methods.build_method` before any data loads: ``ide`` and ``spide`` (their
backward is a solver or a second SNN run in Python inside an ``autograd.Function``, their forward
is ``begin/simulate/readout`` without a graph) and ``opzo`` and ``dfa`` (forward hooks registered
per batch cut each step into per-layer graphs, which one compiled graph would merge). The entry is replaced on the model *instance* by a
compiled version (``model.forward_seq = compiled``), so ``state_dict`` keys stay clean (no
``_orig_mod.``), checkpoints load into an eager model, and ``model(x)`` of an sj_bwsnn model
(``forward`` calls ``forward_seq``) goes through the compiled code: evaluation reuses it. What is
compiled is the class's function, once per run, taking the module as an argument; the EMA copy
calls the same compiled function and, as dynamo's guards do not pin a module instance, reuses the
training model's eval graph instead of compiling its own.

**Compiled once per run.** Graphs per run: one for training (step-wise methods: two, the first
step of a batch starts from the reset state ``v = 0.0``, a float, the later ones from a tensor;
``sltt_k``: twice that, steps with and without gradient) and one for evaluation, all with static
shapes (faster code, one CUDA graph each). A batch of another size than the loader's
``batch_size`` (the smaller last batch of an epoch or of the test set) runs the same model
eagerly instead of compiling another graph: a dynamic batch dimension does not avoid that on the
CPU, where ATen's convolution picks its backend by batch size (``input.size(0) >= 16``) and dynamo
guards on the choice. tests/test_compile.py counts the graphs over two epochs.

**Failures.** Dynamo compiles at the first call of a graph; the backward graph is lowered at the
same time (``torch._functorch.config.force_non_lazy_backward_lowering``, set for the process when a
run compiles), so a failure surfaces *before* anything of that call has run. The entry then prints
one warning line and runs the model eagerly from that call on (an earlier step of the same batch
that ran compiled computed the same values), for the rest of the run: never a half-applied step.
An ``sj_bwsnn`` :class:`~sj_bwsnn.errors.UserError` (a shape error...) is not a compile failure and
propagates as in eager mode.

**CUDA graphs** (``reduce-overhead``) with the fused neurons: see docs/gpu.md. The trainer calls
:meth:`CompiledRun.begin_batch` before each batch (``torch.compiler.cudagraph_mark_step_begin``).
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Iterable

import torch

from ..errors import UserError

MODES = ("off", "default", "reduce-overhead", "max-autotune")
BACKEND = "inductor"  # the tests switch to "aot_eager" (dynamo + AOTAutograd without codegen)
ENTRIES = ("forward", "forward_seq")
_COMPILER_MODULES = ("torch._dynamo", "torch._inductor", "torch._functorch", "torch._subclasses",
                     "torch.fx", "torch._export", "torch._higher_order_ops", "triton")


def is_compile_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the compiler stack (dynamo, AOTAutograd, inductor, triton) rather
    than from the model's own code (our :class:`UserError` is never one)."""
    if isinstance(exc, UserError):
        return False
    return any(c.__module__.startswith(_COMPILER_MODULES) for c in type(exc).__mro__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def batch_dim(x: torch.Tensor) -> int | None:
    """The batch dimension of a model input: 0 for images ``[N, C, H, W]``, 1 for time-first
    ``[T, N, ...]`` (frames, and the step-wise methods' one-step input ``[1, N, C, H, W]``)."""
    return {4: 0, 5: 1}.get(x.dim())


class CompiledEntry:
    """The compiled stand-in for ``model.<entry>``: calls the compiled function on batches of the
    full size (of the model's mode), the eager one otherwise, and falls back to the eager one for
    good on a compile failure."""

    def __init__(self, run: "CompiledRun", model: torch.nn.Module, eager: Callable,
                 compiled: Callable):
        self.run, self.model, self.eager, self.compiled = run, model, eager, compiled

    def __call__(self, x, *args, **kwargs):
        run = self.run
        if not run.active:
            return self.eager(x, *args, **kwargs)
        full = run.batch_sizes.get(self.model.training)
        dim = batch_dim(x) if isinstance(x, torch.Tensor) else None
        if full is not None and dim is not None and x.shape[dim] != full:
            return self.eager(x, *args, **kwargs)  # a smaller last batch: no graph of its own
        try:
            return self.compiled(x, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - sorted by is_compile_error
            if not is_compile_error(exc):
                raise
            run.fall_back(exc)
            return self.eager(x, *args, **kwargs)


class CompiledRun:
    """The compiled entries of one run (:func:`compile_run`); ``active`` until a failure (never
    for ``train.compile: off``)."""

    def __init__(self, mode: str = "off", entry: str | None = None, batch_sizes: dict | None = None,
                 verbose: bool = True):
        self.mode, self.entry, self.verbose = mode, entry, verbose
        self.batch_sizes = batch_sizes or {}
        self.active = mode != "off"
        self.failure: str | None = None
        self.models: list[torch.nn.Module] = []
        self.batches = 0
        self._breaks0 = graph_breaks()[0]

    def fall_back(self, exc: BaseException) -> None:
        """Switch every entry to eager and say so once."""
        if self.active:
            self.active, self.failure = False, _first_line(exc)
            if self.verbose:
                print(f"warning: torch.compile (train.compile: {self.mode}) failed, training "
                      f"continues eagerly: {self.failure}", file=sys.stderr, flush=True)

    def begin_batch(self) -> None:
        """Before each training or evaluation batch: a new CUDA-graph generation for
        ``reduce-overhead`` (outputs of the last batch, neuron states, may be overwritten); after
        the first batch, one line if dynamo split the model (graph breaks)."""
        if not self.active:
            return
        self.batches += 1
        if self.batches == 2 and self.verbose:
            n, first = graph_breaks()
            if n > self._breaks0:
                print(f"note: torch.compile split the model at graph breaks (first: {first}); "
                      f"train.compile_fullgraph: true makes them errors", file=sys.stderr,
                      flush=True)
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()

    def remove(self) -> None:
        """Give every model back its eager entry (the class's method)."""
        for model in self.models:
            model.__dict__.pop(self.entry, None)
        self.models, self.active = [], False


def compile_entry_of(method, model: torch.nn.Module) -> str:
    """The model method ``method`` declares for compilation; one line when there is none."""
    entry = getattr(method, "compile_entry", None)
    name = getattr(method, "name", type(method).__name__)
    if entry is None:
        why = getattr(method, "compile_refusal", "it does not declare what to compile "
                                                 "(no compile_entry)")
        raise UserError(f"train.compile is not supported with train.method {name}: {why}; "
                        f"set train.compile: off")
    if entry not in ENTRIES:
        raise UserError(f"train.method {name}: compile_entry must be one of {', '.join(ENTRIES)}, "
                        f"got {entry!r}")
    if not callable(getattr(model, entry, None)):
        raise UserError(f"train.compile: {type(model).__name__} has no {entry}() to compile for "
                        f"train.method {name}; set train.compile: off")
    return entry


def compile_run(mode: str, fullgraph: bool, method, models: Iterable[torch.nn.Module],
                train_batch: int | None = None, test_batch: int | None = None,
                verbose: bool = True, backend: str | None = None) -> CompiledRun:
    """Compile ``method``'s entry on every model of ``models`` (the trained model, then its EMA
    copy); an inactive :class:`CompiledRun` for ``mode='off'``. ``train_batch`` / ``test_batch``: the loaders' batch sizes;
    batches of another size run eagerly (module docstring). ``backend``: default
    :data:`BACKEND`; ``mode`` applies to inductor only."""
    if mode not in MODES:
        raise UserError(f"train.compile must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return CompiledRun()
    models = list(models)
    entry = compile_entry_of(method, models[0])
    backend = backend or BACKEND
    torch._functorch.config.force_non_lazy_backward_lowering = True  # failures at the first call
    options = dict(backend=backend, fullgraph=bool(fullgraph), dynamic=False)
    if backend == "inductor":
        options["mode"] = mode
    sizes = {k: v for k, v in ((True, train_batch), (False, test_batch)) if v}
    run = CompiledRun(mode, entry, sizes, verbose)
    per_class: dict = {}  # one compiled function per model class: the EMA copy shares its cache
    for model in models:
        cls = type(model)
        if cls not in per_class:
            per_class[cls] = torch.compile(getattr(cls, entry), **options)
        compiled = functools.partial(per_class[cls], model)
        setattr(model, entry, CompiledEntry(run, model, getattr(model, entry), compiled))
        run.models.append(model)
    return run


def graph_breaks() -> tuple[int, str | None]:
    """``(graph breaks so far in this process, the first reason)`` from dynamo's counters."""
    breaks = torch._dynamo.utils.counters["graph_break"]
    first = next(iter(breaks), None)
    return sum(breaks.values()), first.strip().splitlines()[0] if first else None

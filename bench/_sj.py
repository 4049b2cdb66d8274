"""Which multi-step LIF implementation actually ran: SpikingJelly 2.0's dispatch, read and counted.

SpikingJelly 2.0 (``spikingjelly/_ops/selection.py``, ``activation_based/functional/neuron.py``
``lif_multi_step``) takes one of three paths per multi-step LIF call:

* ``neuron_storage`` set (the precision API, ``prepare_model_for_precision``): its Triton
  mixed-precision kernels (``_ops/lif/triton_precision._multistep_lif_mp``); raises unless
  ``SJ_LIF_CUDA_IMPLEMENTATION`` is ``auto`` or ``triton``;
* a surrogate off its fast-path list, an input dtype off fp32/fp16/bf16, or a state ``v`` that is not
  fp32 — which is what plain ``torch.autocast`` gives, since the state takes the input's dtype: the
  Torch reference (``_ops/lif/reference.multi_step``); raises unless the variable is ``auto``
  (``_require_automatic_torch``); records ``(device index, reason)`` in the selection cache, in eager
  mode only;
* otherwise the registered op ``torch.ops.sj_lif.forward``, bound on CUDA to the implementation
  chosen *once per device and process* (``_CudaSelection._selections``; under ``torch.compile``
  ``_compiled_selections``, Triton first): ``cuda`` (source builds only), ``triton`` or ``torch``
  (its reference as an op). The variable is read once, at import of ``spikingjelly._ops.lif``, so
  setting it later in the same process changes nothing — one process per requested implementation.

:func:`lif_paths` counts the calls into each path (install it around an untimed eager call);
:func:`lif_selection` reads the caches; :func:`describe` turns both into the label a row records.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter

LIF_ENV = "SJ_LIF_CUDA_IMPLEMENTATION"
FALLBACK = "torch-reference fallback"


@contextlib.contextmanager
def lif_paths():
    """Count calls into SpikingJelly's three LIF paths (and sj_bwsnn's fused kernel when imported)
    while the block runs; yields the Counter (keys ``sj_op``, ``sj_reference``, ``sj_precision``,
    ``sj_bwsnn_fused``). Eager use only: under ``torch.compile`` it would count traces, not calls."""
    import spikingjelly._ops.lif as ops_lif
    from spikingjelly._ops.lif import reference

    counts: Counter = Counter()
    patches = [(ops_lif, "_forward", "sj_op"), (reference, "multi_step", "sj_reference")]
    try:
        from spikingjelly._ops.lif import triton_precision

        patches.append((triton_precision, "_multistep_lif_mp", "sj_precision"))
    except Exception:  # noqa: BLE001 - no Triton: that path cannot run either
        pass
    fused = sys.modules.get("sj_bwsnn.neuron.fused")
    if fused is not None:
        patches.append((fused, "multi_step", "sj_bwsnn_fused"))

    originals = []
    for owner, attr, key in patches:
        original = getattr(owner, attr)
        originals.append((owner, attr, original))

        def counted(*args, __original=original, __key=key, **kwargs):
            counts[__key] += 1
            return __original(*args, **kwargs)

        setattr(owner, attr, counted)
    try:
        yield counts
    finally:
        for owner, attr, original in originals:
            setattr(owner, attr, original)


def lif_selection() -> dict:
    """SpikingJelly's LIF selection state in this process: the requested implementation (its
    environment variable, read at import), the eager and compile choices per CUDA device index, and
    the reasons of recorded Torch-reference fallbacks."""
    from spikingjelly._ops.lif import _selection

    eager, fallbacks = {}, []
    for key, chosen in _selection._selections.items():
        if isinstance(key, tuple):  # (index, reason): _require_automatic_torch's record
            fallbacks.append(f"cuda:{key[0]}: {key[1]}")
        elif chosen is not None:
            eager[str(key)] = chosen.name
    compiled = {str(k): v.name for k, v in _selection._compiled_selections.items() if v is not None}
    return dict(requested=_selection._requested, eager=eager, compile=compiled, fallbacks=fallbacks)


def describe(counts: Counter | dict, selection: dict, device_type: str, compiled: bool = False,
             index: int = 0) -> str:
    """What ran, in words, from :func:`lif_paths`'s counts and :func:`lif_selection`'s state.

    ``compiled`` describes a torch.compile'd run of the same code: the op path then uses the compile
    selection (Triton first), the Torch reference is traced into the graph."""
    parts = []
    if counts.get("sj_bwsnn_fused"):
        parts.append("sj_bwsnn fused CuPy kernel")
    if counts.get("sj_precision"):
        parts.append("SJ precision API: Triton mixed-precision kernel")
    if counts.get("sj_reference"):
        why = "; ".join(selection.get("fallbacks", [])) or "state or input off the fast path"
        parts.append(f"SJ Torch reference ({FALLBACK}: {why})" + (", traced by torch.compile" if compiled else ""))
    if counts.get("sj_op"):
        if device_type != "cuda":
            parts.append("SJ op on the CPU (its Torch reference)")
        else:
            table = selection.get("compile" if compiled else "eager", {})
            name = table.get(str(index))
            if name is None and compiled:
                name = "compile selection pending (Triton first)"
            parts.append(f"SJ op: {name or 'unknown'}" + (" (torch.compile)" if compiled else ""))
    return " + ".join(parts) if parts else "no spiking neuron ran"


def neuron_settings(model) -> list[dict]:
    """The distinct LIF/IF settings in ``model`` with their counts (to show two models match)."""
    seen: Counter = Counter()
    for module in model.modules():
        if not hasattr(module, "v_threshold") or not hasattr(module, "surrogate_function"):
            continue
        seen[(type(module).__name__, getattr(module, "tau", None), getattr(module, "decay_input", None),
              module.v_threshold, module.v_reset, repr(module.surrogate_function), module.detach_reset,
              getattr(module, "backend", None))] += 1
    keys = ("type", "tau", "decay_input", "v_threshold", "v_reset", "surrogate", "detach_reset", "backend")
    return [dict(zip(keys, k), count=n) for k, n in sorted(seen.items(), key=lambda kv: -kv[1])]


def same_dynamics(a: list[dict], b: list[dict]) -> bool:
    """Whether two :func:`neuron_settings` lists have the same dynamics (class and backend aside)."""
    def strip(rows):
        return sorted((r["tau"], r["decay_input"], r["v_threshold"], r["v_reset"], r["surrogate"],
                       r["detach_reset"]) for r in rows)
    return sorted(set(strip(a))) == sorted(set(strip(b)))

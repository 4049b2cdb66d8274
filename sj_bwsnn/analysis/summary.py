"""Bit-aware model summary: parameters, memory and operations per layer (``sj-bwsnn summary``).

Per reported layer (see :func:`~sj_bwsnn.analysis.profile.reported_modules`):

* ``params_1bit`` — weights of binary layers (any :class:`~sj_bwsnn.layers.BinaryLayer`);
  ``params_32bit`` — every other parameter (stem, downsample 1x1 convs, BN, classifier, biases).
* ``bytes_trained`` — memory as trained: every parameter and float buffer (BN running statistics)
  in fp32, the 1-bit layers' latent weights included (4 bytes each).
* ``bytes_deployed`` — memory as deployed (what ``sj-bwsnn export`` stores): binary weights packed
  8 per byte (``ceil(n / 8)``) plus one fp32 ``alpha`` per output channel; the rest in fp32.
* ``macs_per_step`` / ``acs_per_step`` / ``sops_per_step`` — SpikingJelly's counts on the sample
  (``MACCounter``, ``ACCounter`` and its spike-driven part, :mod:`sj_bwsnn.analysis.counting`, the
  same counters and rows as ``sj-bwsnn energy``), for one sample and one time step: a row's
  operations over one forward divided by ``T`` (so the stem, which runs once on a static image for
  all ``T`` steps, is amortised over them). Rows that hold no layer but run ops of their own (a
  block's residual addition, the mean over time at the top level) are listed too, so the rows add
  up to the totals. A layer that returns a 0-d tensor (fsnn's ``fb_norm``: the feedback scale
  ``c``, a matrix-vector product once per forward, which SpikingJelly's counters do not count:
  they have no rule for ``aten.mv`` / ``aten.dot``) shows the output ``scalar``; ``(unused)``
  marks a layer the forward never reached.
* ``flops_per_step`` — conv / linear layers: output elements x fan-in per sample and step, every
  synapse counted (the dense count, the upper bound of the ACs of a spike-input layer).

Compression: ``fp32 bytes / deployed bytes`` and ``fp16 bytes / deployed bytes``, where the fp32 /
fp16 figures store every parameter and float buffer at 32 / 16 bits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import BinaryLayer
from .counting import SJCounts
from .profile import profile_forward, reported_modules

TOP = "(top level)"


def packed_bytes(n_bits: int) -> int:
    """Bytes for ``n_bits`` sign bits packed 8 per byte."""
    return math.ceil(n_bits / 8)


def _float_numel(tensors) -> int:
    return sum(t.numel() for t in tensors if t.is_floating_point())


def layer_memory(m: nn.Module) -> dict:
    """Parameter counts and bytes (trained / deployed / fp16) of one module's own tensors."""
    own_params = list(m.parameters())  # a unit (binary conv, neuron) owns its children's tensors
    own_buffers = list(m.buffers())
    p1 = m.weight.numel() if isinstance(m, BinaryLayer) else 0
    p32 = sum(p.numel() for p in own_params) - p1
    buffers = _float_numel(own_buffers)
    alphas = m.weight.shape[0] if isinstance(m, BinaryLayer) else 0
    return {
        "params_1bit": p1, "params_32bit": p32,
        "bytes_trained": 4 * (p1 + p32 + buffers),
        "bytes_deployed": packed_bytes(p1) + 4 * (alphas + p32 + buffers),
        "bytes_fp16": 2 * (p1 + p32 + buffers),
    }


def summarize(model: nn.Module, x: torch.Tensor, T: int) -> dict:
    """The summary of ``model`` on sample input ``x`` (one sample suffices). See module doc."""
    modules = dict(reported_modules(model))
    counts = SJCounts(model)
    records, samples = profile_forward(model, [x], modes=counts.modes)
    ops, per = counts.rows(), max(samples, 1) * T
    zero_ops = {"macs_per_step": 0.0, "acs_per_step": 0.0, "sops_per_step": 0.0}

    def op_fields(name: str) -> dict:
        c = ops.get(name)
        return {"macs_per_step": c["macs"] / per, "acs_per_step": c["acs"] / per,
                "sops_per_step": c["synops"] / per} if c else dict(zero_ops)

    rows = []
    for r in records:
        rows.append({"name": r.name, "kind": r.kind, "out_shape": list(r.out_shape),
                     **layer_memory(modules[r.name]), "input": r.input_kind or None,
                     "flops_per_step": r.ops / T if r.input_kind else 0.0, **op_fields(r.name)})
    # leaves the forward never reached (unused heads...) still hold memory
    seen = {r["name"] for r in rows}
    for name, m in modules.items():
        if name not in seen:
            rows.append({"name": name, "kind": type(m).__name__, "out_shape": None,
                         **layer_memory(m), "input": None, "flops_per_step": 0.0, **zero_ops})
    # modules that hold no reported layer but run ops of their own (residual additions...)
    everything = dict(model.named_modules())
    no_memory = {k: 0 for k in ("params_1bit", "params_32bit", "bytes_trained", "bytes_deployed",
                                "bytes_fp16")}
    for name in ops:
        if name not in modules:
            rows.append({"name": name or TOP, "kind": type(everything[name]).__name__,
                         "out_shape": None, **no_memory, "input": None, "flops_per_step": 0.0,
                         **op_fields(name)})
    order = {name: i for i, name in enumerate(everything)}
    rows.sort(key=lambda r: order.get(r["name"], len(order)))
    keys = ("params_1bit", "params_32bit", "bytes_trained", "bytes_deployed", "bytes_fp16",
            "flops_per_step", "macs_per_step", "acs_per_step", "sops_per_step")
    totals = {k: sum(r[k] for r in rows) for k in keys}
    # tensors held by modules that are not reported (none in our models): counted in the totals
    listed = sum(r["params_1bit"] + r["params_32bit"] for r in rows)
    rest = sum(p.numel() for p in model.parameters()) - listed
    totals["params_32bit"] += rest
    for k, b in (("bytes_trained", 4), ("bytes_deployed", 4), ("bytes_fp16", 2)):
        totals[k] += b * rest
    compression = {
        "vs_fp32": totals["bytes_trained"] / totals["bytes_deployed"],
        "vs_fp16": totals["bytes_fp16"] / totals["bytes_deployed"],
    }
    return {"T": T, "input_shape": list(x.shape), "layers": rows, "totals": totals,
            "compression": compression}


def deployed_bytes(model: nn.Module) -> int:
    """Bytes of the model as deployed (the ``bytes_deployed`` total of :func:`summarize`): 1-bit
    weights packed, one fp32 alpha per output channel, everything else fp32."""
    modules = dict(reported_modules(model))
    mems = [layer_memory(m) for m in modules.values()]
    rest = (sum(p.numel() for p in model.parameters())
            - sum(x["params_1bit"] + x["params_32bit"] for x in mems))
    return sum(x["bytes_deployed"] for x in mems) + 4 * rest


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _fmt_count(n: float) -> str:
    if n == 0:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.4g}"


def format_summary(s: dict, title: str = "") -> str:
    """The human-readable table of :func:`summarize`'s result."""
    head = ("layer", "kind", "output", "1-bit", "32-bit", "trained", "deployed", "FLOPs/step",
            "MACs/step", "ACs/step")
    rows = []
    for r in s["layers"]:
        ran = r["macs_per_step"] or r["acs_per_step"]
        shape = ("x".join(map(str, r["out_shape"])) if r["out_shape"] else
                 "scalar" if r["out_shape"] == [] else "-" if ran else "(unused)")
        rows.append((r["name"], r["kind"], shape, _fmt_count(r["params_1bit"]),
                     _fmt_count(r["params_32bit"]), _fmt_bytes(r["bytes_trained"]),
                     _fmt_bytes(r["bytes_deployed"]), _fmt_count(r["flops_per_step"]),
                     _fmt_count(r["macs_per_step"]), _fmt_count(r["acs_per_step"])))
    t = s["totals"]
    rows.append(("total", "", "", _fmt_count(t["params_1bit"]), _fmt_count(t["params_32bit"]),
                 _fmt_bytes(t["bytes_trained"]), _fmt_bytes(t["bytes_deployed"]),
                 _fmt_count(t["flops_per_step"]), _fmt_count(t["macs_per_step"]),
                 _fmt_count(t["acs_per_step"])))
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [title] if title else []
    out += [line(head), "-" * len(line(head))]
    out += [line(r) for r in rows[:-1]] + ["-" * len(line(head)), line(rows[-1])]
    c = s["compression"]
    out += [
        f"T={s['T']}, input {tuple(s['input_shape'])}; output shapes without the batch dimension "
        f"(T first for multi-step layers)",
        "memory: trained = all parameters and BN statistics in fp32 (latent weights of 1-bit "
        "layers included); deployed = 1-bit weights packed 8 per byte + fp32 alpha per channel",
        "MACs/step, ACs/step: SpikingJelly's MACCounter / ACCounter on this sample (ACs: synapses "
        "spikes reach, BN, neuron updates, additions, pooling), per sample, forward / T; "
        "FLOPs/step: conv / linear, every synapse (the dense count); same counters as "
        "`sj-bwsnn energy`",
        f"compression (deployed vs all-fp32 / all-fp16): {c['vs_fp32']:.2f}x / {c['vs_fp16']:.2f}x",
    ]
    return "\n".join(out)

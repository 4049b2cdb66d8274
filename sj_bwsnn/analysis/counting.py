"""SpikingJelly 2.0's operation counters, booked per layer (``sj-bwsnn energy`` and ``summary``).

SpikingJelly's ``activation_based.op_counter`` counts at dispatch level, aten op by aten op:

* ``ACCounter`` (``op_counter/ac.py``): accumulates. A convolution / matmul with a spike operand
  counts the synapses its spikes actually reach (``_spike_convolution``: a convolution of the spike
  map with an all-ones kernel, so a spike at a border or next to padding reaches fewer outputs than
  its full fan-out); a BatchNorm in eval mode ``n + C`` (``_ac_native_batch_norm``), additions and
  subtractions (residual shortcuts, neuron updates) one per output element, sums / means / average
  pools ``inputs - outputs``. A convolution / matmul without a spike operand counts no AC.
* ``MACCounter`` (``op_counter/mac.py``): multiply-accumulates of convolutions / matmuls without
  a spike operand (every output element times its fan-in) and BatchNorm's affine step (``n``).
* ``SynOpCounter`` (``op_counter/synop.py``): the spike-driven subset of ``ACCounter`` (the same
  rule functions on mm / addmm / bmm / baddbmm / convolution). Here it is read off ``ACCounter``'s
  records of those ops rather than counted a second time (``SYNOP_OPS``).
* ``NeuromorphicMemoryAccessCounter`` (``op_counter/neuromorphic_memory_access.py``, the memory
  term of ``estimate_simple_energy``): weight and bias reads of conv / linear layers (spike input:
  the weights its spikes reach) and one read plus one write of every neuron state per step.

:class:`SJCounts` runs them through ``DispatchCounterMode`` / ``ModuleCounterMode`` during
:func:`~sj_bwsnn.analysis.profile.profile_forward`'s pass and also books every count under the row
of the module that ran it: the reported layer (a conv, a BN, a neuron...) or, for an op outside
any of them (a residual addition inside a block's ``forward``), the innermost module whose forward
was running. The rows therefore add up to the totals, which equal the counters run directly.

One deliberate setting: :class:`~sj_bwsnn.layers.WeightBinarizer` is in the counters'
``extra_ignore_modules``. It computes ``alpha = mean|w|`` on every call (``mean.dim``, counted as
ACs by ``ACCounter``) while a deployed binary layer stores ``alpha`` once (``sj-bwsnn export``).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
from spikingjelly.activation_based.op_counter import (ACCounter, DispatchCounterMode, MACCounter,
                                                      ModuleCounterMode,
                                                      NeuromorphicMemoryAccessCounter,
                                                      SynOpCounter)
from torch import nn

from ..layers import WeightBinarizer
from .profile import hidden_from_counters, reported_modules

IGNORED_MODULES = (WeightBinarizer,)
SYNOP_OPS = frozenset(SynOpCounter().rules)  # mm, addmm, bmm, baddbmm, convolution
MEMORY_METRICS = ("weight_read_bytes", "bias_read_bytes", "neuron_state_read_bytes",
                  "neuron_state_write_bytes")


def row_names(model: nn.Module) -> dict[nn.Module, tuple[int, str]]:
    """``module -> (depth, row name)``: a module inside a reported unit (a neuron's surrogate, a
    binary layer's binarizer) books under the unit; the model itself is the row ``''``."""
    units = [name for name, _ in reported_modules(model)]
    rows = {}
    for name, m in model.named_modules():
        unit = next((u for u in units if name == u or name.startswith(u + ".")), name)
        rows[m] = (name.count(".") + 1 if name else 0, unit)
    return rows


class _PerRow:
    """Mixin for a SpikingJelly counter: book each count also under the row of the innermost
    active module (``count`` receives the active modules from the counter mode)."""

    def _init_rows(self, rows: dict[nn.Module, tuple[int, str]]) -> None:
        self._row_of = rows
        self.rows: dict[str, Counter] = defaultdict(Counter)

    def _row(self, active_modules) -> str:
        found = [self._row_of[m] for m in active_modules or () if m in self._row_of]
        return max(found)[1] if found else ""

    def count(self, func, args, kwargs, out, active_modules=None, parent_names=None):
        value = super().count(func, args, kwargs, out, active_modules=active_modules,
                              parent_names=parent_names)
        self._book(self._row(active_modules), func, value)
        return value

    def _book(self, row: str, func, value: int) -> None:
        self.rows[row][func] += value


class RowACCounter(_PerRow, ACCounter):
    def __init__(self, rows):
        ACCounter.__init__(self, extra_ignore_modules=list(IGNORED_MODULES))
        self._init_rows(rows)


class RowMACCounter(_PerRow, MACCounter):
    def __init__(self, rows):
        MACCounter.__init__(self, extra_ignore_modules=list(IGNORED_MODULES))
        self._init_rows(rows)


class RowMemoryCounter(_PerRow, NeuromorphicMemoryAccessCounter):
    def __init__(self, rows):
        NeuromorphicMemoryAccessCounter.__init__(self, extra_ignore_modules=list(IGNORED_MODULES))
        self._init_rows(rows)

    def count(self, *args, **kwargs):
        # Its rule runs in a module hook, inside the dispatch mode: hide its tensor code, which
        # SpikingJelly 2.0.0 leaves partly visible (neuromorphic_memory_access.py:55 sums the
        # occupancy map outside its guard, so estimate_simple_energy adds those sums to its ACs).
        with hidden_from_counters():
            return super().count(*args, **kwargs)

    def _book(self, row: str, func, value: int) -> None:  # the rule left its metrics pending
        phase, module = func
        for metric, v in self._pending_metrics.items():
            self.rows[row][metric] += v
        if "weight_read_bytes" in self._pending_metrics:  # element counts, for other widths
            self.rows[row]["weight_reads"] += (self._pending_metrics["weight_read_bytes"]
                                               // module.weight.element_size())
            if module.bias is not None:
                self.rows[row]["bias_reads"] += (self._pending_metrics["bias_read_bytes"]
                                                 // module.bias.element_size())
        else:
            states = [s for s in module.memories() if torch.is_tensor(s)]
            size = states[0].element_size() if states else 1
            self.rows[row]["state_accesses"] += (self._pending_metrics["neuron_state_read_bytes"]
                                                 + self._pending_metrics[
                                                     "neuron_state_write_bytes"]) // size


class SJCounts:
    """SpikingJelly's counters on one model, entered around every forward call of a profiling
    pass (``profile_forward(model, batches, modes=counts.modes)``); ``memory=True`` adds the
    neuromorphic memory-access counter of ``estimate_simple_energy``."""

    def __init__(self, model: nn.Module, memory: bool = False):
        rows = row_names(model)
        self.model = model
        self.ac, self.mac = RowACCounter(rows), RowMACCounter(rows)
        self.memory = RowMemoryCounter(rows) if memory else None
        self._dispatch = DispatchCounterMode([self.ac, self.mac])
        self.order: dict[str, int] = {}  # rows in the model's order (named_modules)
        for _, name in rows.values():
            self.order.setdefault(name, len(self.order))

    def modes(self) -> list:
        """Context managers for one forward call (memory counter first, as SpikingJelly's
        ``SimpleEnergyProfiler.__enter__`` nests them)."""
        modes = []
        if self.memory is not None:
            modes.append(ModuleCounterMode([self.memory], model=self.model))
        return modes + [self._dispatch]

    def totals(self) -> dict[str, int]:
        """Whole-run totals (all samples): ``acs``, ``macs``, ``synops`` and, with the memory
        counter, its byte counts."""
        out = {"acs": self.ac.get_total(), "macs": self.mac.get_total(),
               "synops": sum(v for op, v in self.ac.records["Global"].items() if op in SYNOP_OPS)}
        if self.memory is not None:
            glob = self.memory.get_counts().get("Global", {})
            out.update({k: glob.get(k, 0) for k in MEMORY_METRICS})
        return out

    def rows(self) -> dict[str, dict[str, int]]:
        """Per row (all samples): ``acs``, ``macs``, ``synops`` (+ memory metrics and element
        counts ``weight_reads``, ``bias_reads``, ``state_accesses``), in the model's order."""
        names = set(self.ac.rows) | set(self.mac.rows) | set(self.memory.rows if self.memory else ())
        table = {}
        for name in sorted(names, key=lambda n: (n == "", self.order.get(n, -1))):  # top last
            ac, mac = self.ac.rows.get(name, Counter()), self.mac.rows.get(name, Counter())
            row = {"acs": sum(ac.values()), "macs": sum(mac.values()),
                   "synops": sum(v for op, v in ac.items() if op in SYNOP_OPS)}
            if self.memory is not None:
                row.update({k: 0 for k in (*MEMORY_METRICS, "weight_reads", "bias_reads",
                                           "state_accesses")})
                row.update(self.memory.rows.get(name, {}))
            table[name] = row
        return table

"""Energy models of ``sj-bwsnn energy``: every constant, where it comes from, and the arithmetic.

Sources (45 nm CMOS at 0.9 V unless said otherwise):

* [H14] M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
  Digest of Technical Papers pp. 10-14 (doi:10.1109/ISSCC.2014.6757323), Figure 1.1.9 (the
  energy table): integer ADD 8 bit 0.03 pJ, 32 bit 0.1 pJ; integer MULT 8 bit 0.2 pJ, 32 bit
  3.1 pJ; FP ADD 16 bit 0.4 pJ, 32 bit 0.9 pJ; FP MULT 16 bit 1.1 pJ, 32 bit 3.7 pJ; cache
  (64-bit access) 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ.
* [SJ] SpikingJelly 2.0.0, ``activation_based/op_counter/simple_energy.py``
  ``SimpleEnergyCostConfig`` (lines 84-119): the same presets (fp32 4.6 / 0.9, fp16 1.5 / 0.4,
  int8 0.23 / 0.03 pJ per MAC / AC) and 24.96 pJ per byte of memory traffic, which it gives as
  the 3.12 pJ/bit of STEP (Shen et al., arXiv:2505.11151, as cited there; we did not trace the
  figure in STEP itself).
* [L22] E. Lemaire et al., "An analytical estimation of spiking neural networks energy
  efficiency", ICONIP 2022 (arXiv:2210.13107), as implemented by SpikingJelly 2.0.0
  ``op_counter/analytical_energy.py`` (``LemaireEnergyCostConfig``, lines 104-111: 32-bit integer
  add 0.1 pJ and multiply 3.1 pJ from [H14]; SRAM cost per byte interpolated between [H14]'s cache
  sizes, read as 32-bit accesses).

Models (per sample; counts from :mod:`sj_bwsnn.analysis.counting` or the paper convention)::

    horowitz:  E = E_MAC * MACs + E_AC * ACs
    simple:    E = horowitz + E_mem * (weight + bias reads + neuron-state reads and writes) bytes
    lemaire:   SpikingJelly's estimate_lemaire_energy, one sample at a time (its buffer sizes come
               from the layer tensors, so a batch would change the per-sample figure)

Precision presets set ``E_MAC = E_mult + E_add`` and ``E_AC = E_add`` at that width [H14] and the
bytes of every stored value for ``simple`` (fp32 4, fp16 2, int8 1; SpikingJelly counts the bytes
of the dtype it ran in, fp32 here, so its byte counts are rescaled by width).

``binary_weights=True`` costs the 1-bit layers as 1-bit hardware would run them (our model, no
paper gives one): a spike meeting a weight ``+-1`` adds or subtracts 1 in an integer accumulator
(it is not a 1-bit add: the accumulator holds up to ``+-fan_in``, 12 bits for a 3x3x128 conv), at
the price of a 32-bit integer ADD, 0.1 pJ [H14], or of the preset's own add when that is cheaper
(int8: 0.03 pJ); a real input times ``+-1`` is a sign change and an add (``E_AC``); ``alpha`` is
one multiply per output element at the preset's width unless every output goes straight into a
BatchNorm, which absorbs it (``BN(alpha * y)`` is a BN of ``y`` with scaled parameters; every binary
conv of sj_bwsnn's models has one); weights are read at 1 bit each (``simple``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from spikingjelly.activation_based import functional
from torch import nn

from ..errors import UserError

H14 = "Horowitz, ISSCC 2014, Fig. 1.1.9 (45 nm)"
SJ_SIMPLE = "SpikingJelly 2.0 op_counter/simple_energy.py SimpleEnergyCostConfig (STEP, 3.12 pJ/bit)"
MODELS = ("horowitz", "simple", "lemaire")


@dataclass(frozen=True)
class Precision:
    """Arithmetic and storage of one precision preset ([H14] Fig. 1.1.9)."""

    name: str
    e_mult: float  # pJ per multiply
    e_add: float  # pJ per add
    value_bytes: int  # bytes per stored weight, bias or neuron state

    @property
    def e_mac(self) -> float:
        return round(self.e_mult + self.e_add, 9)  # 3.7 + 0.9 = 4.6, not 4.6000000000000005


PRECISIONS = {
    "fp32": Precision("fp32", 3.7, 0.9, 4),  # FP MULT 32 bit 3.7 pJ, FP ADD 32 bit 0.9 pJ
    "fp16": Precision("fp16", 1.1, 0.4, 2),  # FP MULT 16 bit 1.1 pJ, FP ADD 16 bit 0.4 pJ
    "int8": Precision("int8", 0.2, 0.03, 1),  # integer MULT 8 bit 0.2 pJ, ADD 8 bit 0.03 pJ
}
E_ADD_INT32_PJ = 0.1  # integer ADD 32 bit [H14]: accumulating a +-1 weight
E_MEMORY_PJ_PER_BYTE = 24.96  # [SJ]: 8 x 3.12 pJ/bit


@dataclass
class Costs:
    """The constants one estimate uses, with their sources."""

    precision: Precision
    e_mac: float
    e_ac: float
    binary_weights: bool

    @classmethod
    def make(cls, precision: str = "fp32", e_mac: float | None = None, e_ac: float | None = None,
             binary_weights: bool = False) -> "Costs":
        if precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        for flag, v in (("--e-mac", e_mac), ("--e-ac", e_ac)):
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise UserError(f"{flag} is an energy in pJ and must be a finite number >= 0, got {v}")
        p = PRECISIONS[precision]
        return cls(p, p.e_mac if e_mac is None else e_mac, p.e_add if e_ac is None else e_ac,
                   binary_weights)

    @property
    def e_ac_binary(self) -> float:
        return min(self.e_ac, E_ADD_INT32_PJ)

    def table(self, memory: bool) -> dict[str, dict]:
        p = self.precision
        src = f"{H14}: {p.name} mult {p.e_mult} + add {p.e_add}"
        out = {
            "e_mac_pj": {"value": self.e_mac,
                         "source": src if self.e_mac == p.e_mac else "--e-mac (user)"},
            "e_ac_pj": {"value": self.e_ac,
                        "source": f"{H14}: {p.name} add" if self.e_ac == p.e_add else "--e-ac (user)"},
        }
        if self.binary_weights:
            out["e_ac_binary_weight_pj"] = {
                "value": self.e_ac_binary,
                "source": f"{H14}: 32-bit integer add 0.1 pJ (accumulating +-1), or E_AC if lower"}
            out["e_alpha_mult_pj"] = {"value": p.e_mult,
                                      "source": f"{H14}: {p.name} mult (alpha not folded into a BN)"}
        if memory:
            out["e_memory_pj_per_byte"] = {"value": E_MEMORY_PJ_PER_BYTE, "source": SJ_SIMPLE}
            out["bytes_per_value"] = {"value": p.value_bytes, "source": f"{p.name} storage"}
            if self.binary_weights:
                out["bytes_per_binary_weight"] = {"value": 1 / 8, "source": "1 bit per weight"}
        return out


def compute_energy(rows: list[dict], costs: Costs, memory: bool = False) -> dict[str, float]:
    """Energy per sample (pJ) of ``rows`` (per-sample counts: ``macs``, ``acs``, ``sops``, and
    ``binary``, ``alpha_mults``; with ``memory`` also ``weight_reads``, ``bias_reads``,
    ``state_accesses`` in elements), broken down by term."""
    p, e = costs.precision, {"mac_pj": 0.0, "ac_pj": 0.0}
    if costs.binary_weights:
        e.update(binary_ac_pj=0.0, alpha_pj=0.0)
    if memory:
        e.update(parameter_memory_pj=0.0, neuron_state_memory_pj=0.0)
    for r in rows:
        if costs.binary_weights and r.get("binary"):
            e["binary_ac_pj"] += costs.e_ac_binary * r["sops"]
            e["ac_pj"] += costs.e_ac * (r["acs"] - r["sops"] + r["macs"])  # x * (+-1): an add
            e["alpha_pj"] += p.e_mult * r.get("alpha_mults", 0)
        else:
            e["mac_pj"] += costs.e_mac * r["macs"]
            e["ac_pj"] += costs.e_ac * r["acs"]
        if memory:
            w_bytes = 1 / 8 if costs.binary_weights and r.get("binary") else p.value_bytes
            e["parameter_memory_pj"] += E_MEMORY_PJ_PER_BYTE * (
                r["weight_reads"] * w_bytes + r["bias_reads"] * p.value_bytes)
            e["neuron_state_memory_pj"] += E_MEMORY_PJ_PER_BYTE * r["state_accesses"] * p.value_bytes
    e["total_pj"] = sum(e.values())
    return e


# Lemaire's formulas cover Linear / Conv and IF / LIF neurons; every other module is left out.
# The weight binarizer is not a layer of the deployed network (alpha * sign(w) is stored once);
# Identity and Dropout (in eval) compute nothing.
_NOT_LAYERS = ("WeightBinarizer", "Identity", "Dropout")


@torch.no_grad()
def lemaire_energy(model: nn.Module, batches) -> dict:
    """SpikingJelly's Lemaire model [L22], summed over the samples of ``batches`` run one at a time,
    per sample. Modules outside the model's scope are omitted (``omitted`` names them)."""
    from spikingjelly.activation_based.op_counter import LemaireEnergyConfig, estimate_lemaire_energy

    from .profile import batch_size

    total, breakdown, counts, omitted, samples = 0.0, {}, {}, set(), 0
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            x = x.to(device)
            for i in range(batch_size(x)):
                xi = x[:, i:i + 1] if x.dim() == 5 else x[i:i + 1]
                functional.reset_net(model)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    rep = estimate_lemaire_energy(model, xi, config=LemaireEnergyConfig(strict=False))
                omitted.update(str(w.message).split(" support ")[-1].split(";")[0] for w in caught
                               if "Lemaire formulas do not support" in str(w.message))
                total += rep.total_pj
                for k, v in rep.breakdown_pj.items():
                    breakdown[k] = breakdown.get(k, 0.0) + v
                for k, v in rep.counts.items():
                    counts[k] = counts.get(k, 0) + v
                samples += 1
            functional.reset_net(model)
    finally:
        model.train(was_training)
    n = max(samples, 1)
    return {"total_pj": total / n, "breakdown_pj": {k: v / n for k, v in breakdown.items()},
            "counts": {k: v / n for k, v in counts.items()},
            "omitted": sorted(omitted - set(_NOT_LAYERS)), "samples": samples}

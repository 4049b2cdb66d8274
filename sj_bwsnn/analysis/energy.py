"""Firing rates, synaptic operations and an energy estimate (``sj-bwsnn energy``).

The estimate follows the convention of the SNN literature (Spikformer, SEW-ResNet, SEI-BWSNN),
per sample (image) and counted over the whole forward of ``T`` time steps::

    firing rate r_l   = spikes / (neurons * T * N)        (spiking layer l; averaged over T, batch)
    SOPs              = sum_{l: spike input} FLOPs_l * r_in(l) * T
    MACs              = sum_{l: real input}  FLOPs_l * steps_l
    E                 = E_MAC * MACs + E_AC * SOPs        E_MAC = 4.6 pJ, E_AC = 0.9 pJ (45 nm,
                                                          Horowitz, ISSCC 2014; 32-bit float)

``FLOPs_l`` are the multiply-accumulates of conv / linear layer ``l`` for one sample and one time
step (``output elements * fan_in``); ``r_in(l)`` is the measured mean of its input (for the
classifier: of the pooled head spikes). ``steps_l`` is how often a real-input layer runs: ``T``
for the downsample 1x1 convs, once for a stem on a static image. Assumptions: only conv / linear
layers cost energy (BN, neuron updates, pooling, additions and memory traffic are left out, as in
the papers); a spike drives every synapse of its fan-out, border effects of padding included in
the average; 1-bit weights are treated like any other weight (a 1-bit AC is cheaper still, so the
figure is an upper bound for binary layers). ``E_real`` (every operation a MAC) is the same network
with real-valued activations, for comparison.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import UserError
from .profile import profile_forward

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


def energy_report(model: nn.Module, batches, T: int, e_mac: float = E_MAC_PJ,
                  e_ac: float = E_AC_PJ) -> dict:
    """Measure firing rates on ``batches`` (model inputs, streamed once) and compute SOPs, MACs and
    energy.

    Every count is per sample (one image, all ``T`` steps); energies are in pJ (see module doc).
    ``samples`` in the result is how many samples the averages cover.
    """
    layers, neurons = [], []
    records, samples = profile_forward(model, batches)
    for r in records:
        if r.firing_rate is not None:
            neurons.append({"name": r.name, "kind": r.kind, "firing_rate": r.firing_rate})
        elif r.input_kind:
            spike = r.input_kind == "spike"
            layers.append({
                "name": r.name, "kind": r.kind, "input": r.input_kind,
                "flops_per_step": r.ops / T,
                "input_rate": r.input_rate if spike else None,
                "sops": r.ops * r.input_rate if spike else 0.0,
                "macs": 0.0 if spike else r.ops,
            })
    sops = sum(x["sops"] for x in layers)
    macs = sum(x["macs"] for x in layers)
    energy = e_mac * macs + e_ac * sops
    e_real = e_mac * sum(x["flops_per_step"] * T for x in layers)
    return {
        "T": T, "samples": samples, "e_mac_pj": e_mac, "e_ac_pj": e_ac,
        "neurons": neurons, "layers": layers,
        "mean_firing_rate": (sum(n["firing_rate"] for n in neurons) / len(neurons)) if neurons else None,
        "sops": sops, "macs": macs, "energy_pj": energy, "energy_real_pj": e_real,
    }


def format_energy(rep: dict, samples: int) -> str:
    """Human-readable tables of :func:`energy_report`'s result."""
    out = ["firing rate = spikes per neuron per time step, averaged over T and "
           f"{samples} test samples", ""]
    w = max([len(n["name"]) for n in rep["neurons"] + rep["layers"]] + [5])
    out.append(f"{'spiking layer':<{w}}  {'kind':<10}  firing rate")
    out += [f"{n['name']:<{w}}  {n['kind']:<10}  {n['firing_rate']:11.4f}" for n in rep["neurons"]]
    out += ["", f"{'layer':<{w}}  {'kind':<13}  {'input':<5}  {'FLOPs/step':>10}  "
                f"{'input rate':>10}  {'SOPs':>10}  {'MACs':>10}"]
    for x in rep["layers"]:
        rate = f"{x['input_rate']:.4f}" if x["input_rate"] is not None else "-"
        out.append(f"{x['name']:<{w}}  {x['kind']:<13}  {x['input']:<5}  "
                   f"{x['flops_per_step']:>10.4g}  {rate:>10}  {x['sops']:>10.4g}  {x['macs']:>10.4g}")
    e, er = rep["energy_pj"], rep["energy_real_pj"]
    out += ["",
            f"per image, T={rep['T']}: SOPs = {rep['sops']:.4g}, MACs = {rep['macs']:.4g}",
            f"energy = {rep['e_mac_pj']} pJ x MACs + {rep['e_ac_pj']} pJ x SOPs = "
            f"{e / 1e6:.4g} uJ per image",
            f"same network with real-valued activations (every op a MAC): {er / 1e6:.4g} uJ "
            f"({er / e:.1f}x more)" if e > 0 else "no operations counted",
            "SOPs = sum over spike-input layers of FLOPs/step x input rate x T; MACs for "
            "real-input layers (stem once for static images, downsample convs every step)"]
    return "\n".join(out)


def plot_firing_rates(rep: dict, path: str | Path) -> None:
    """A PNG bar chart of the firing rate of every spiking layer (matplotlib, Agg backend)."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..engine.checkpoint import atomic_write_bytes

    names = [n["name"] for n in rep["neurons"]]
    rates = [n["firing_rate"] for n in rep["neurons"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 1.5), 3.6))
    ax.bar(range(len(names)), rates, color="#3b6ea5")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_title(f"firing rate per spiking layer (T={rep['T']})")
    fig.tight_layout()
    atomic_write_bytes(Path(path), lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)

"""Firing rates, operation counts and energy estimates (``sj-bwsnn energy``).

Two conventions, both measured in one pass over the data (per sample = one image, all ``T`` steps):

* ``sj`` (default): SpikingJelly 2.0's op counters, exact and per op (:mod:`.counting`): MACs
  (``MACCounter``), ACs (``ACCounter``) and of those the spike-driven synaptic ones, ``sops``
  (``SynOpCounter``'s ops). They count what runs, where it runs: the synapses spikes actually
  reach, BatchNorm, neuron updates, residual additions, pooling, attention products.
* ``paper``: the convention of the SNN literature (Spikformer, Zhou et al. ICLR 2023, appendix;
  SEW-ResNet, Fang et al. NeurIPS 2021; SEI-BWSNN), conv / linear layers only::

      firing rate r_l = spikes / (neurons * T * N)        (spiking layer l; averaged over T, batch)
      SOPs = sum_{l: spike input} FLOPs_l * r_in(l) * T
      MACs = sum_{l: real input}  FLOPs_l * steps_l

  ``FLOPs_l`` are the multiply-accumulates of layer ``l`` for one sample and one time step
  (``output elements * fan_in``), ``r_in(l)`` the measured mean of its input (for the classifier:
  of the pooled head spikes, as ``W mean(s) = mean(W s)``), ``steps_l`` how often a real-input
  layer runs (``T`` for the downsample 1x1 convs, once for a stem on a static image).

Where they differ (the report prints the numbers): a spike at a border or next to padding reaches
fewer outputs than the full fan-out the paper convention assumes; SpikingJelly adds the ACs of BN,
neuron updates, residual additions and pooling and the MACs of BN's affine step; it counts a
classifier fed by average-pooled spikes as MACs (its input is not binary) and the spike-driven
products of attention (outside conv / linear layers). Both count the stem once on a static image,
because it runs once (papers that repeat the image over ``T`` run and count it ``T`` times).

Energy models, precisions and the 1-bit option: :mod:`.energy_models`. NeuroBench's metrics:
:mod:`.nbmetrics`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import UserError
from ..layers import BinaryLayer
from .counting import SJCounts
from .energy_models import MODELS, Costs, compute_energy, lemaire_energy
from .profile import profile_forward

CONVENTIONS = ("sj", "paper")
TOP = "(top level)"
SJ_SOURCE = ("SpikingJelly 2.0 op_counter: ACCounter and MACCounter in DispatchCounterMode, "
             "WeightBinarizer ignored (alpha is stored once when deployed); sops = the ACs of "
             "SynOpCounter's ops (spike-driven mm / bmm / convolution)")
PAPER_SOURCE = ("literature convention (Spikformer, SEW-ResNet): conv / linear layers, SOPs = "
                "FLOPs/step x input firing rate x T, MACs = FLOPs/step x steps run")


def check_options(convention: str = "sj", model: str = "horowitz", precision: str = "fp32",
                  binary_weights: bool = False, e_mac: float | None = None,
                  e_ac: float | None = None) -> Costs:
    """Refuse a bad combination of options with one line (:class:`UserError`); the costs."""
    if convention not in CONVENTIONS:
        raise UserError(f"--convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if model not in MODELS:
        raise UserError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    if model != "horowitz" and convention == "paper":
        raise UserError(f"--model {model} is SpikingJelly's model of its own counts; use it with "
                        f"--convention sj (the paper convention counts compute only: horowitz)")
    if model == "lemaire" and (precision != "fp32" or binary_weights or e_mac is not None
                               or e_ac is not None):
        raise UserError("--model lemaire has its own constants (32-bit integer arithmetic and SRAM, "
                        "Lemaire et al. 2022); drop --precision, --binary-weights, --e-mac, --e-ac")
    return Costs.make(precision, e_mac, e_ac, binary_weights)


def _sj_rows(model, records, counts, samples, T) -> list[dict]:
    modules, recs = dict(model.named_modules()), {r.name: r for r in records}
    rows = []
    for name, c in counts.rows().items():
        m, r = modules[name], recs.get(name)
        row = {"name": name or TOP, "kind": type(m).__name__,
               "input": (r.input_kind or None) if r else None,
               "flops_per_step": r.ops / T if r and r.input_kind else None,
               "macs": c["macs"] / samples, "acs": c["acs"] / samples, "sops": c["synops"] / samples}
        for k in ("weight_reads", "bias_reads", "state_accesses"):
            if k in c:
                row[k] = c[k] / samples
        rows.append(row)
    return rows


def _paper_rows(records, T) -> list[dict]:
    rows = []
    for r in records:
        if r.input_kind:
            spike = r.input_kind == "spike"
            rows.append({"name": r.name, "kind": r.kind, "input": r.input_kind,
                         "flops_per_step": r.ops / T, "input_rate": r.input_rate if spike else None,
                         "sops": r.ops * r.input_rate if spike else 0.0,
                         "macs": 0.0 if spike else r.ops})
    return rows


def _difference(sj: dict, paper: dict) -> dict:
    """The terms that separate the two conventions, per sample, and the sentence saying why."""
    sj_by = {x["name"]: x for x in sj["layers"]}
    layer_names = {x["name"] for x in paper["layers"]}
    spike = [x for x in paper["layers"] if x["input"] == "spike"]
    border = sum(x["sops"] - sj_by[x["name"]]["sops"] for x in spike
                 if x["name"] in sj_by and sj_by[x["name"]]["macs"] == 0)
    pooled = [x for x in spike if x["name"] in sj_by and sj_by[x["name"]]["macs"] > 0]
    pooled_sops = sum(x["sops"] for x in pooled)
    pooled_macs = sum(sj_by[x["name"]]["macs"] for x in pooled)
    other_acs = sj["acs"] - sj["sops"]
    outside_sops = sum(x["sops"] for x in sj["layers"] if x["name"] not in layer_names)
    extra_macs = sj["macs"] - paper["macs"] - pooled_macs
    parts = [f"the synapses spikes reach ({border:.4g} fewer SOPs here: a spike at a border or "
             f"next to padding reaches fewer outputs than its fan-out)"]
    if other_acs:
        parts.append(f"{other_acs:.4g} more ACs (BN, neuron updates, residual additions, pooling)")
    if extra_macs:
        parts.append(f"{extra_macs:.4g} more MACs (BN's affine step)")
    if pooled:
        parts.append(f"the classifier on average-pooled spikes as {pooled_macs:.4g} MACs where the "
                     f"paper convention has {pooled_sops:.4g} SOPs (its input is not binary)")
    if outside_sops:
        parts.append(f"{outside_sops:.4g} spike-driven ACs outside conv / linear layers (attention "
                     f"products), which the paper convention leaves out")
    text = ("The paper convention assumes every spike drives its full fan-out (FLOPs x rate), in "
            "conv / linear layers only; SpikingJelly counts what runs, op by op: "
            + "; ".join(parts) + ". Both count a layer as often as it runs: a stem on a static "
            "image once (papers that repeat the image over T count it T times).")
    return {"border_sops": border, "other_acs": other_acs, "extra_macs": extra_macs,
            "pooled_classifier_sops": pooled_sops, "pooled_classifier_macs": pooled_macs,
            "outside_layer_sops": outside_sops, "text": text}


def energy_report(model: nn.Module, batches, T: int, *, convention: str = "sj",
                  energy_model: str = "horowitz", precision: str = "fp32",
                  binary_weights: bool = False, e_mac: float | None = None,
                  e_ac: float | None = None, neurobench: bool = False) -> dict:
    """Count operations on ``batches`` (model inputs; streamed once, or a list / a function
    returning them for ``energy_model='lemaire'``, which runs them a second time) and estimate the
    energy. Every count is per sample (one image, all ``T`` steps), energies in pJ.

    The result holds the selected convention at the top level (``layers``, ``macs``, ``acs``,
    ``sops``), the other one under its name (``'paper'`` or ``'sj'``), ``difference`` (terms and a
    sentence), ``energy`` and, with ``neurobench``, NeuroBench's metrics (module docs).
    """
    costs = check_options(convention, energy_model, precision, binary_weights, e_mac, e_ac)
    if energy_model == "lemaire" and not callable(batches) and iter(batches) is batches:
        raise ValueError("energy_model='lemaire' runs the data twice: pass a list or a function "
                         "that returns the batches")
    make = batches if callable(batches) else (lambda: batches)
    counts = SJCounts(model, memory=energy_model == "simple")
    records, samples = profile_forward(model, make(), modes=counts.modes, neurobench=neurobench)
    n = max(samples, 1)
    modules = dict(model.named_modules())
    neurons = [{"name": r.name, "kind": r.kind, "firing_rate": r.firing_rate}
               for r in records if r.firing_rate is not None]
    sj_layers = _sj_rows(model, records, counts, n, T)
    sj = {"source": SJ_SOURCE, "layers": sj_layers, **{k: sum(x[k] for x in sj_layers)
                                                         for k in ("macs", "acs", "sops")}}
    paper_layers = _paper_rows(records, T)
    paper = {"source": PAPER_SOURCE, "layers": paper_layers,
             **{k: sum(x[k] for x in paper_layers) for k in ("macs", "sops")}}
    paper["acs"] = paper["sops"]
    chosen, other = (sj, "paper") if convention == "sj" else (paper, "sj")

    recs = {r.name: r for r in records}
    for x in chosen["layers"]:  # what the 1-bit option needs to know about a row
        m, r = modules.get(x["name"]), recs.get(x["name"])
        x["binary"] = isinstance(m, BinaryLayer)
        x["alpha_mults"] = r.out_elements if x["binary"] and r and not r.feeds_bn else 0.0
        x.setdefault("acs", x["sops"])
    if energy_model == "lemaire":
        lem = lemaire_energy(model, make())
        energy = {"model": "lemaire", "convention": "sj", "total_pj": lem["total_pj"],
                  "breakdown_pj": lem["breakdown_pj"], "counts": lem["counts"],
                  "omitted_modules": lem["omitted"],
                  "source": "SpikingJelly 2.0 estimate_lemaire_energy (Lemaire et al., ICONIP "
                            "2022), one sample at a time, strict=False"}
    else:
        e = compute_energy(chosen["layers"], costs, memory=energy_model == "simple")
        energy = {"model": energy_model, "convention": convention, "precision": precision,
                  "binary_weights": binary_weights, "constants": costs.table(energy_model == "simple"),
                  "total_pj": e.pop("total_pj"), "breakdown_pj": e}
        if energy_model == "horowitz":  # compute only, like the SNN figure it is compared with
            energy["ann_twin_pj"] = costs.e_mac * sum(r.ops for r in records if r.input_kind)

    notes = []
    sj_acs = {x["name"]: x["acs"] for x in sj_layers}
    if any(sj_acs.get(x["name"], 0) == 0 for x in neurons):
        notes.append("some neuron updates ran in fused kernels (CuPy / Triton on a GPU), which "
                     "SpikingJelly's dispatch counters do not see: their ACs are missing; count on "
                     "CPU (--set train.device=cpu) to include them")
    if energy_model == "lemaire" and energy["omitted_modules"]:
        notes.append("Lemaire's model covers Linear / Conv and IF / LIF only; omitted: "
                     + ", ".join(energy["omitted_modules"]))
    rep = {"T": T, "samples": samples, "convention": convention, "neurons": neurons,
           "mean_firing_rate": (sum(x["firing_rate"] for x in neurons) / len(neurons))
           if neurons else None,
           **chosen, other: sj if other == "sj" else paper,
           "difference": _difference(sj, paper), "energy": energy, "notes": notes}
    if neurobench:
        from .nbmetrics import neurobench_metrics

        rep["neurobench"] = neurobench_metrics(model, records)
    return rep


def _g(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def format_energy(rep: dict) -> str:
    """Human-readable tables of :func:`energy_report`'s result."""
    out = ["firing rate = spikes per neuron per time step, averaged over T and "
           f"{rep['samples']} test samples", ""]
    w = max([len(x["name"]) for x in rep["neurons"] + rep["layers"]] + [13])
    kw = max([len(x["kind"]) for x in rep["layers"]] + [10])
    out.append(f"{'spiking layer':<{w}}  {'kind':<{kw}}  firing rate")
    out += [f"{x['name']:<{w}}  {x['kind']:<{kw}}  {x['firing_rate']:11.4f}" for x in rep["neurons"]]
    T, sj = rep["T"], rep["convention"] == "sj"
    if sj:
        out += ["", f"SpikingJelly op counts per image, T={T} (ACs include the synaptic ones, "
                    f"sops):", f"{'layer':<{w}}  {'kind':<{kw}}  {'input':<5}  {'FLOPs/step':>10}  "
                    f"{'MACs':>10}  {'ACs':>10}  {'sops':>10}"]
        out += [f"{x['name']:<{w}}  {x['kind']:<{kw}}  {x['input'] or '-':<5}  "
                f"{_g(x['flops_per_step']):>10}  {_g(x['macs']):>10}  {_g(x['acs']):>10}  "
                f"{_g(x['sops']):>10}" for x in rep["layers"]]
        p = rep["paper"]
        out += ["", f"per image, T={T}: MACs = {rep['macs']:.4g}, ACs = {rep['acs']:.4g} "
                    f"(sops = {rep['sops']:.4g})  [SpikingJelly ACCounter / MACCounter]",
                f"paper convention (FLOPs x firing rate): SOPs = {p['sops']:.4g}, "
                f"MACs = {p['macs']:.4g}  (--convention paper for its table)"]
    else:
        out += ["", f"paper convention per image, T={T}:",
                f"{'layer':<{w}}  {'kind':<{kw}}  {'input':<5}  {'FLOPs/step':>10}  "
                f"{'input rate':>10}  {'SOPs':>10}  {'MACs':>10}"]
        out += [f"{x['name']:<{w}}  {x['kind']:<{kw}}  {x['input']:<5}  {x['flops_per_step']:>10.4g}  "
                f"{_g(x['input_rate']):>10}  {x['sops']:>10.4g}  {x['macs']:>10.4g}"
                for x in rep["layers"]]
        s = rep["sj"]
        out += ["", f"per image, T={T}: SOPs = {rep['sops']:.4g}, MACs = {rep['macs']:.4g}  "
                    f"[FLOPs/step x input rate x T; real input: FLOPs/step x steps run]",
                f"SpikingJelly (exact): MACs = {s['macs']:.4g}, ACs = {s['acs']:.4g} "
                f"(sops = {s['sops']:.4g})  (--convention sj for its table)"]
    out += ["", "where they differ: " + rep["difference"]["text"], ""]
    out += _format_energy_block(rep)
    if "neurobench" in rep:
        nb = rep["neurobench"]
        so = nb["synaptic_operations"]
        out += ["", "NeuroBench metrics (Yik et al. 2025; definitions of neurobench 2.3.0):",
                f"  footprint            {nb['footprint_bytes']} B as held "
                f"({nb['footprint_deployed_bytes']} B deployed, 1-bit packed)",
                f"  connection sparsity  {nb['connection_sparsity']:.4f}",
                f"  activation sparsity  {nb['activation_sparsity']:.4f}",
                f"  synaptic operations  effective MACs {so['effective_macs']:.4g}, effective ACs "
                f"{so['effective_acs']:.4g}, dense {so['dense']:.4g} per image"]
    out += [f"note: {x}" for x in rep["notes"]]
    return "\n".join(out)


def _format_energy_block(rep: dict) -> list[str]:
    e = rep["energy"]
    head = f"energy ({e['model']}"
    if e["model"] == "lemaire":
        b = e["breakdown_pj"]
        return [f"{head}, SpikingJelly's analytical model, one image at a time): "
                f"{e['total_pj'] / 1e6:.4g} uJ per image (ops {b['ops_pj'] / 1e6:.4g}, addressing "
                f"{b['addressing_pj'] / 1e6:.4g}, memory {b['memory_pj'] / 1e6:.4g} uJ)"]
    c = e["constants"]
    head += f", {e['precision']}{', 1-bit weights' if e['binary_weights'] else ''}): "
    ops = "ACs" if rep["convention"] == "sj" else "SOPs"
    lines = [head + f"{c['e_mac_pj']['value']} pJ x MACs + {c['e_ac_pj']['value']} pJ x {ops}"
             + (" + memory" if e["model"] == "simple" else "")
             + f" = {e['total_pj'] / 1e6:.4g} uJ per image"]
    lines.append("  terms: " + ", ".join(f"{k[:-3]} {v / 1e6:.4g}"
                                         for k, v in e["breakdown_pj"].items()) + " uJ")
    lines += [f"  {k} = {v['value']:.4g}  ({v['source']})" for k, v in c.items()]
    if e.get("ann_twin_pj") and e["total_pj"] > 0:
        lines.append(f"same network with real-valued activations (every conv / linear op a MAC): "
                     f"{e['ann_twin_pj'] / 1e6:.4g} uJ ({e['ann_twin_pj'] / e['total_pj']:.1f}x)")
    return lines


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


def energy_command(args, find_recipe) -> int:
    """``sj-bwsnn energy RECIPE --checkpoint FILE ...``: ``args`` is the parsed command line,
    ``find_recipe`` the CLI's recipe lookup (a path or a bundled name). Options are checked before
    anything is loaded; the test set is streamed, never held in memory at once."""
    import json

    from ..engine.build import pick_device
    from ..engine.checkpoint import check_trained_with, check_writable, load_checkpoint
    from ..engine.recipe import load_recipe
    from .source import build_source, sample_batches

    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UserError(f"--plot writes a PNG; give a file name ending in .png, got {args.plot}")
    options = dict(convention=args.convention, precision=args.precision,
                   binary_weights=args.binary_weights, e_mac=args.e_mac, e_ac=args.e_ac)
    check_options(model=args.model, **options)
    if args.plot:
        check_writable(args.plot)  # now, not after the whole test set
    recipe = load_recipe(find_recipe(args.recipe), args.set)
    ckpt = load_checkpoint(args.checkpoint)
    check_trained_with(args.recipe, recipe, args.set, ckpt, args.checkpoint)
    src = build_source(recipe, ckpt["model"], args.checkpoint)
    src.model.to(pick_device(src.recipe.train.device))
    # lemaire streams the test set a second time
    rep = energy_report(src.model, lambda: sample_batches(src, args.batches), src.recipe.T,
                        energy_model=args.model, neurobench=args.neurobench, **options)
    if args.plot:
        plot_firing_rates(rep, args.plot)
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint,
                          "firing_rate_definition": "spikes per neuron per time step, averaged "
                          "over T and the samples", "count_unit": "operations per sample (all T "
                          "steps)", "energy_unit": "pJ per sample", **rep}, indent=2))
    else:
        print(format_energy(rep))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0

"""``sj-bwsnn export CHECKPOINT --out FILE [--format packed|nir] [--nir-threshold sj|spec]``.

:func:`export_command` does the work; ``cli.py`` only parses the arguments. The model is rebuilt
from the checkpoint's stored recipe (:func:`~sj_bwsnn.analysis.source.source_from_checkpoint`,
no data set needed), written, reloaded and compared with the checkpoint's model on one batch: the
first test batch where the data set is on disk, else a synthetic one (the output says which).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .nir import ONLY_DIGITS, PACKED


def export_command(checkpoint: str, out: str, fmt: str = "packed",
                   nir_threshold: str | None = None) -> int:
    """Write the export, check its reload, print what was done; the process exit code."""
    if fmt == "nir":
        return _export_nir(checkpoint, out, nir_threshold or "sj")
    if nir_threshold is not None:
        raise UserError("--nir-threshold applies to --format nir only")
    return _export_packed(checkpoint, out)


def _export_packed(checkpoint: str, out: str) -> int:
    import torch
    from spikingjelly.activation_based import functional

    from ..analysis.source import example_batch, source_from_checkpoint
    from .packed import export_model, load_exported

    path = export_out(checkpoint, out, ".bwsnn")
    src = source_from_checkpoint(checkpoint, need_data=False)
    sizes = export_model(src.model, src.recipe.to_dict(), src.info, path)
    # check the promise: the reloaded model gives identical outputs (test inputs where here)
    x, what = example_batch(src)
    with torch.no_grad():
        a = src.model(x)
        functional.reset_net(src.model)
        reloaded = load_exported(path)
        b = reloaded(x)
        functional.reset_net(reloaded)
    same = torch.equal(a, b)
    print(f"wrote {path} ({sizes['file_bytes'] / 1024:.1f} KiB; checkpoint "
          f"{Path(checkpoint).stat().st_size / 1024:.1f} KiB)")
    if sizes["binary_layers"]:
        print(f"{sizes['binary_layers']} binary layers: {sizes['binary_bytes_fp32'] / 1024:.1f} KiB "
              f"as fp32 -> {sizes['binary_bytes_packed'] / 1024:.1f} KiB packed (1-bit signs + "
              f"fp32 alpha per channel): {sizes['ratio']:.1f}x smaller")
    else:
        print("no binary layers (a full-precision model): every weight stored as it is")
    print(f"reloaded with sj_bwsnn.load_exported: outputs on {x.shape[-4]} {what} "
          f"{'identical' if same else 'DIFFER (max |diff| %.3g)' % (a - b).abs().max().item()}")
    return 0 if same else 1


def export_out(checkpoint: str, out: str, suffix: str) -> Path:
    """``--out`` checked before any work: writable, and not the checkpoint itself."""
    from ..engine.checkpoint import check_writable

    path = Path(out)
    if path.exists() and Path(checkpoint).exists() and path.samefile(checkpoint):
        raise UserError(f"--out {path} is the checkpoint itself; write the export to another file "
                        f"(e.g. {path.with_suffix(suffix)})")
    check_writable(path)
    return path


def check_nir_recipe(recipe) -> None:
    """Refuse a checkpoint's recipe that cannot go to NIR, in one line worded for its case, before
    its model is built (``sj-bwsnn export --format nir``); to_nir checks the model itself."""
    if recipe.model.name.startswith("fsnn_"):
        raise UserError(f"cannot export to NIR: {recipe.model.name} is a feedback SNN: its last "
                        f"layer feeds layer 0 one step later, a loop through time that the "
                        f"per-step NIR export (feed-forward graphs) does not build; {PACKED}")
    if recipe.neuron.v_reset is not None or recipe.neuron.type.startswith("dsr_"):
        return
    if recipe.train.method == "ottt":
        raise UserError(f"cannot export to NIR: trained with train.method ottt, whose neurons must "
                        f"reset by subtraction (OTTT's traces need it), but NIR's LIF/IF reset to "
                        f"v_reset; {PACKED}")
    preset = f", from neuron.preset {recipe.neuron.preset}" if recipe.neuron.preset else ""
    raise UserError(f"cannot export to NIR: the checkpoint's neurons reset by subtraction "
                    f"(neuron.v_reset: null{preset}), but NIR's LIF/IF reset to v_reset: {PACKED}, "
                    f"or retrain with --set neuron.v_reset=0.0; {ONLY_DIGITS}")


def _export_nir(checkpoint: str, out: str, threshold: str) -> int:
    """``--format nir``: write the NIR graph, reload it with SpikingJelly's importer and report
    its agreement with the checkpoint's model on one batch."""
    from ..analysis.source import build_source, example_batch, recipe_from_checkpoint
    from .nir import DT, require_nir, to_nir, write_nir

    require_nir()
    import nir

    from . import nir_check

    path = export_out(checkpoint, out, ".nir")
    recipe, ckpt = recipe_from_checkpoint(checkpoint)
    check_nir_recipe(recipe)  # the refusals worded for the run's case, before anything is built
    src = build_source(recipe, ckpt["model"], checkpoint, need_data=False)
    x, what = example_batch(src)
    graph = to_nir(src.model, x, DT, threshold)
    size = write_nir(graph, path)
    kinds = [type(n).__name__ for n in graph.nodes.values()]
    binary = sum("binary_signs" in n.metadata for n in graph.nodes.values())
    folded = sum("bn_folded" in n.metadata for n in graph.nodes.values())
    print(f"wrote {path} ({size / 1024:.1f} KiB; NIR {nir.__version__}, {len(kinds)} nodes: "
          + ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds))) + ")")
    print(f"{binary} binary layers as alpha * sign(w) (sign bits and alphas in node metadata); "
          f"{folded} BatchNorms folded into the conv/linear before them; dt={DT:g}, T={src.model.T}")
    rep = nir_check.agreement(nir_check.run_ours(src.model, x),
                              nir_check.run_sj(nir.read(path), nir_check.input_sequence(src.model, x),
                                               DT))
    print(f"reloaded with SpikingJelly's import_from_nir: predictions on {rep['samples']} {what} "
          f"{rep['same_prediction']:.2%} identical, spikes {rep['spikes_identical_all']:.4%} "
          f"identical over {rep['layers_compared']} neuron layers, max |logit diff| "
          f"{rep['max_logit_diff']:.3g}")
    return 0

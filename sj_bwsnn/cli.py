"""The ``sj-bwsnn`` command.

    sj-bwsnn train RECIPE [--set key.sub=value ...] [--out DIR] [--resume]
    torchrun --nproc_per_node=N -m sj_bwsnn train RECIPE ...   (DDP; rank 0 writes)
    sj-bwsnn eval RECIPE --checkpoint FILE [--ema] [--set ...]
    sj-bwsnn recipes
    sj-bwsnn summary RECIPE|CHECKPOINT [--json]
    sj-bwsnn energy RECIPE --checkpoint FILE [--batches N] [--json] [--plot FILE.png]
    sj-bwsnn export CHECKPOINT --out FILE
    sj-bwsnn doctor

RECIPE is a YAML path or the name of a bundled recipe (``digits_bwsnn``). Mistakes in the input
end with one line ``error: ...`` on stderr and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .errors import UserError

EXIT_USAGE = 2


def recipe_dirs() -> list[Path]:
    """Where bundled recipes live: the source checkout's ``recipes/`` and the installed copy."""
    return [Path(__file__).resolve().parent.parent / "recipes",
            Path(sys.prefix) / "share" / "sj_bwsnn" / "recipes"]


def find_recipe(name: str) -> Path:
    """A recipe path as given, or a bundled recipe by name (with or without ``.yaml``)."""
    path = Path(name)
    if path.exists():
        return path
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    for d in recipe_dirs():
        if (d / f"{stem}.yaml").is_file():
            return d / f"{stem}.yaml"
    raise UserError(f"recipe not found: {name} (a YAML path or a bundled name; "
                    f"see `sj-bwsnn recipes`)")


def list_recipes() -> list[tuple[str, str]]:
    """``(name, description)`` of every bundled recipe."""
    from .engine.recipe import read_yaml

    seen: dict[str, str] = {}
    for d in recipe_dirs():
        for p in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            if p.stem not in seen:
                seen[p.stem] = str(read_yaml(p).get("description", "")).strip().splitlines()[0:1]
    return [(k, v[0] if v else "") for k, v in sorted(seen.items())]


def _prepare_out(out: Path, resume: bool) -> None:
    """Create OUT (or check it for --resume); refuse to overwrite an earlier run."""
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint at {last}; start without --resume")
        return
    if last.exists():
        raise UserError(f"{out} already holds a run ({last}); pass --resume to continue it "
                        f"or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory {out} is not writable ({e.strerror})") from None


def cmd_train(args) -> int:
    from .engine import Trainer, load_checkpoint, load_recipe
    from .engine import distributed
    from .engine.trainer import TrainingInterrupted
    from .engine.build import pick_device
    from .engine.checkpoint import atomic_write_bytes

    if args.stop_after is not None and args.stop_after < 1:
        raise UserError(f"--stop-after must be an epoch number >= 1, got {args.stop_after}")
    path = find_recipe(args.recipe)
    recipe = load_recipe(path, args.set)
    continual = recipe.continual.protocol is not None
    if continual and args.stop_after is not None:
        raise UserError("--stop-after applies to ordinary runs; stop a continual run with Ctrl-C "
                        "(it saves its position) and continue it with --resume")
    out = Path(args.out) if args.out else Path("runs") / path.stem / time.strftime("%Y%m%d-%H%M%S")
    distributed.init_distributed(pick_device(recipe.train.device))
    main = distributed.world()[0] == 0
    fresh = not out.exists()
    if main:
        _prepare_out(out, args.resume)
    try:
        try:
            if continual:
                from .continual import ContinualTrainer

                trainer = ContinualTrainer(recipe, out)
            else:
                trainer = Trainer(recipe, out)
        except UserError:
            if main and fresh and out.is_dir() and not any(out.iterdir()):
                out.rmdir()  # a run that never started leaves nothing behind
            raise
        if args.resume:
            trainer.load_state(load_checkpoint(out / "last.pt"), out / "last.pt")
            if main and continual:
                done = min(trainer.stage, len(trainer.stages) - 1)
                print(f"resuming {out} at task {trainer.stages[done].task + 1}/"
                      f"{recipe.continual.tasks} ({trainer.stages[done].kind}) after epoch "
                      f"{trainer.epoch}")
            elif main:
                print(f"resuming {out} after epoch {trainer.epoch}")
        elif main:
            import yaml

            text = yaml.safe_dump(recipe.to_dict(), sort_keys=False).encode()
            atomic_write_bytes(out / "recipe.yaml", lambda f: f.write(text))
        kind = "binary" if recipe.model.binary else "full-precision"
        if main:
            ranks = f" x{trainer.world} ranks" if trainer.world > 1 else ""
            kd = f", distilling from {recipe.teacher.checkpoint}" if trainer.teacher else ""
            c = recipe.continual
            seq = (f", continual: {c.protocol} x{c.tasks} tasks, protect "
                   f"{trainer.protect.describe()}" if continual else "")
            print(f"training {recipe.model.name} ({kind}) T={recipe.T} on {recipe.data.name} "
                  f"[{trainer.device}{ranks}]{kd}{seq} -> {out}", flush=True)
        resume = (f"sj-bwsnn train {args.recipe} --out {out} --resume"
                  + "".join(f" --set {s}" for s in args.set))
        try:
            if continual:
                summary = trainer.run()
            else:
                trainer.fit(until=args.stop_after)
        except TrainingInterrupted as stop:
            print(f"{stop}; saved {out / 'last.pt'}. Resume with: {resume}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print(f"\naborted; {out / 'last.pt'} holds the last saved state. Resume with: {resume}",
                  file=sys.stderr)
            return 130
        if main and continual:
            acc, bwt = summary["acc"], summary["bwt"]
            print(f"final ACC={acc:.4f}" + (f" BWT={bwt:+.4f}" if bwt is not None else ""))
            print(f"saved {out / 'last.pt'}, {out / 'metrics.json'} and the matrix")
        elif main and trainer.epoch < recipe.train.epochs:
            print(f"stopped after epoch {trainer.epoch} of {recipe.train.epochs} (--stop-after); "
                  f"continue with: {resume}")
        elif main:
            print(f"final test_acc={trainer.metrics[-1]['test_acc']:.4f}")
            print(f"saved {out / 'last.pt'} and {out / 'metrics.json'}")
        return 0
    finally:
        distributed.shutdown()


def cmd_eval(args) -> int:
    from .engine import Trainer, load_checkpoint, load_recipe
    from .engine.checkpoint import load_model_state

    recipe = load_recipe(find_recipe(args.recipe), args.set)
    ckpt = load_checkpoint(args.checkpoint)
    trainer = Trainer(recipe, None, training=False)
    state = ckpt["model"]
    if args.ema:
        if not ckpt.get("ema"):
            raise UserError(f"--ema: {args.checkpoint} holds no EMA weights (train with "
                            f"train.ema_decay set)")
        # timm's ModelEmaV3 keeps the averaged copy as its `module`: strip that prefix
        from timm.models import clean_state_dict

        state = clean_state_dict(ckpt["ema"])
    load_model_state(trainer.model, state, args.checkpoint)
    m = trainer.evaluate()
    print(f"test_loss={m['test_loss']:.4f} test_acc={m['test_acc']:.4f}")
    return 0


def cmd_recipes(args) -> int:
    rows = list_recipes()
    width = max((len(n) for n, _ in rows), default=0)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0


def _analysis_source(target: str, sets: list[str]):
    """A recipe (path or bundled name) or a checkpoint file -> analysis ``Source``."""
    from .analysis.source import build_source, is_checkpoint_path, source_from_checkpoint
    from .engine import load_recipe

    if is_checkpoint_path(target):
        if sets:
            raise UserError("--set applies to recipes; a checkpoint carries its own recipe")
        return source_from_checkpoint(target)
    return build_source(load_recipe(find_recipe(target), sets))


def _print_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=2))


def cmd_summary(args) -> int:
    from .analysis.summary import format_summary, summarize

    from .analysis.source import sample_batches

    src = _analysis_source(args.target, args.set)
    x = next(sample_batches(src, 1))
    x = x[:, :1] if src.info.frames else x[:1]
    s = summarize(src.model, x, src.recipe.T)
    if args.json:
        _print_json({"source": args.target, "model": src.recipe.model.name, **s})
    else:
        print(format_summary(s, f"{src.recipe.model.name} from {args.target}"))
    return 0


def cmd_energy(args) -> int:
    from .analysis.energy import E_AC_PJ, E_MAC_PJ, energy_report, format_energy, plot_firing_rates
    from .analysis.source import build_source, sample_batches
    from .engine import load_checkpoint, load_recipe

    e_mac = E_MAC_PJ if args.e_mac is None else args.e_mac
    e_ac = E_AC_PJ if args.e_ac is None else args.e_ac
    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    if e_mac < 0 or e_ac < 0:
        raise UserError("--e-mac and --e-ac are energies in pJ and must be >= 0")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UserError(f"--plot writes a PNG; give a file name ending in .png, got {args.plot}")
    from .engine.build import pick_device

    src = build_source(load_recipe(find_recipe(args.recipe), args.set),
                       load_checkpoint(args.checkpoint)["model"], args.checkpoint)
    src.model.to(pick_device(src.recipe.train.device))
    # streamed: the test set is never held in memory at once
    rep = energy_report(src.model, sample_batches(src, args.batches), src.recipe.T, e_mac, e_ac)
    if args.plot:
        plot_firing_rates(rep, args.plot)
    if args.json:
        _print_json({"checkpoint": args.checkpoint,
                     "firing_rate_definition": "spikes per neuron per time step, averaged over "
                     "T and the samples", "energy_unit": "pJ per sample", **rep})
    else:
        print(format_energy(rep, rep["samples"]))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def cmd_export(args) -> int:
    import torch
    from spikingjelly.activation_based import functional

    from .analysis.export import export_model, load_exported
    from .analysis.source import sample_batches, source_from_checkpoint

    src = source_from_checkpoint(args.checkpoint)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UserError(f"--out: folder {out.parent} does not exist")
    sizes = export_model(src.model, src.recipe.to_dict(), src.info, out)
    # check the promise: the reloaded model gives identical outputs on real test inputs
    x = next(sample_batches(src, 1))
    with torch.no_grad():
        a = src.model(x)
        functional.reset_net(src.model)
        reloaded = load_exported(out)
        b = reloaded(x)
        functional.reset_net(reloaded)
    same = torch.equal(a, b)
    print(f"wrote {out} ({sizes['file_bytes'] / 1024:.1f} KiB; checkpoint "
          f"{Path(args.checkpoint).stat().st_size / 1024:.1f} KiB)")
    print(f"{sizes['binary_layers']} binary layers: {sizes['binary_bytes_fp32'] / 1024:.1f} KiB "
          f"as fp32 -> {sizes['binary_bytes_packed'] / 1024:.1f} KiB packed (1-bit signs + fp32 "
          f"alpha per channel): {sizes['ratio']:.1f}x smaller")
    print(f"reloaded with sj_bwsnn.load_exported: outputs on {x.shape[0]} test inputs "
          f"{'identical' if same else 'DIFFER (max |diff| %.3g)' % (a - b).abs().max().item()}")
    return 0 if same else 1


def cmd_doctor(args) -> int:
    from .analysis.doctor import diagnose, format_report

    rep = diagnose()
    print(format_report(rep))
    return 0 if rep.problem is None else 1


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.epochs=1 --set T=2")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sj-bwsnn", description="Train binary-weight SNNs from YAML recipes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a recipe")
    t.add_argument("recipe", help="YAML path or bundled recipe name")
    _add_set(t)
    t.add_argument("--out", help="output folder (default runs/<recipe>/<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.add_argument("--stop-after", type=int, metavar="EPOCH",
                   help="stop once this epoch is done (a job's time limit); the schedule still "
                        "follows train.epochs, and --resume continues the run")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on the recipe's test data")
    e.add_argument("recipe")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--ema", action="store_true", help="evaluate the EMA weights in the checkpoint")
    _add_set(e)
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("recipes", help="list the bundled recipes")
    r.set_defaults(func=cmd_recipes)

    s = sub.add_parser("summary", help="per-layer 1-bit/32-bit parameters, memory and operations")
    s.add_argument("target", metavar="RECIPE|CHECKPOINT",
                   help="recipe (YAML path or bundled name) or checkpoint (.pt/.pth/.ckpt)")
    _add_set(s)
    s.add_argument("--json", action="store_true", help="print the same numbers as JSON")
    s.set_defaults(func=cmd_summary)

    en = sub.add_parser("energy", help="firing rates, SOPs and energy estimate on test data")
    en.add_argument("recipe")
    en.add_argument("--checkpoint", required=True)
    _add_set(en)
    en.add_argument("--batches", type=int, help="test batches to run (default: all)")
    en.add_argument("--e-mac", type=float, help="pJ per MAC (default 4.6: 32-bit float, 45 nm)")
    en.add_argument("--e-ac", type=float, help="pJ per AC (default 0.9: 32-bit float, 45 nm)")
    en.add_argument("--json", action="store_true")
    en.add_argument("--plot", metavar="FILE.png", help="bar chart of firing rate per layer")
    en.set_defaults(func=cmd_energy)

    x = sub.add_parser("export", help="1-bit packed export loadable with sj_bwsnn.load_exported")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True)
    x.set_defaults(func=cmd_export)

    d = sub.add_parser("doctor", help="check versions, CUDA, CuPy and the neuron backend")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("SJ_BWSNN_DEBUG") == "1"
    try:
        return args.func(args)
    except UserError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

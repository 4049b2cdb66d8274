"""The ``sj-bwsnn`` command.

    sj-bwsnn train RECIPE [--set key.sub=value ...] [--out DIR] [--resume [auto]] [--stop-after EPOCH]
    torchrun --nproc_per_node=N -m sj_bwsnn train RECIPE ...   (DDP; rank 0 writes)
    torchrun --max-restarts=3 ... -m sj_bwsnn train RECIPE --out DIR --resume auto   (elastic)
    sj-bwsnn eval RECIPE --checkpoint FILE [--ema] [--set ...]
    sj-bwsnn recipes
    sj-bwsnn summary RECIPE|CHECKPOINT [--json]
    sj-bwsnn energy RECIPE --checkpoint FILE [--batches N] [--convention sj|paper]
                    [--model horowitz|simple|lemaire] [--precision fp32|fp16|int8]
                    [--binary-weights] [--neurobench] [--json] [--plot FILE.png]
    sj-bwsnn export CHECKPOINT --out FILE [--format packed|nir] [--nir-threshold sj|spec]
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

from .errors import UserError, closest

EXIT_USAGE = 2


def recipe_dirs() -> list[Path]:
    """Where bundled recipes live: the source checkout's ``recipes/`` and the installed copy."""
    return [Path(__file__).resolve().parent.parent / "recipes",
            Path(sys.prefix) / "share" / "sj_bwsnn" / "recipes"]


def find_recipe(name: str) -> Path:
    """A recipe path as given, or a bundled recipe by name (with or without ``.yaml``)."""
    path = Path(name)
    if path.is_dir():
        inside = path / "recipe.yaml"
        raise UserError(f"recipe {name} is a folder; give a YAML file"
                        + (f", e.g. {inside} (the recipe of that run)" if inside.is_file() else ""))
    if path.exists():
        from .engine.checkpoint import is_torch_file

        if is_torch_file(path):
            raise UserError(f"{name} is a checkpoint, not a recipe; give the recipe (a YAML path or "
                            f"bundled name; a run keeps its own as OUT/recipe.yaml) and the "
                            f"checkpoint with --checkpoint")
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


def cmd_train(args) -> int:
    from .engine import Trainer, load_checkpoint, load_recipe
    from .engine import distributed
    from .engine.trainer import TrainingInterrupted
    from .engine.build import pick_device
    from .engine.checkpoint import atomic_write_bytes
    from .engine.run_folder import prepare_out, remove_if_empty, resume_decision

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
    resuming = resume_decision(out, args.resume)
    created = prepare_out(out, resuming) if main else []
    try:
        try:
            if continual:
                from .continual import ContinualTrainer

                trainer = ContinualTrainer(recipe, out)
            else:
                trainer = Trainer(recipe, out)
        except BaseException:  # bad data, a bug, Ctrl-C while the data set loads
            remove_if_empty(created)
            raise
        if resuming:
            trainer.load_state(load_checkpoint(out / "last.pt"), out / "last.pt")
            if args.stop_after is not None and trainer.epoch >= args.stop_after:
                raise UserError(f"--stop-after {args.stop_after}: {out / 'last.pt'} already "
                                f"finished epoch {trainer.epoch}; give a later epoch, or leave "
                                f"--stop-after out to run to train.epochs")
            if main and continual:
                done = min(trainer.stage, len(trainer.stages) - 1)
                print(f"resuming {out} at task {trainer.stages[done].task + 1}/"
                      f"{recipe.continual.tasks} ({trainer.stages[done].kind}) after epoch "
                      f"{trainer.epoch}", flush=True)
            elif main:
                where = (f"in epoch {trainer.epoch + 1} after batch {trainer.batch_in_epoch}"
                         if trainer.batch_in_epoch else f"after epoch {trainer.epoch}")
                print(f"resuming {out} {where}", flush=True)
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
    from .engine.checkpoint import check_trained_with, load_model_state

    recipe = load_recipe(find_recipe(args.recipe), args.set)
    ckpt = load_checkpoint(args.checkpoint)
    if args.ema and not ckpt.get("ema"):
        raise UserError(f"--ema: {args.checkpoint} holds no EMA weights (train with "
                        f"train.ema_decay set)")
    check_trained_with(args.recipe, recipe, args.set, ckpt, args.checkpoint)
    trainer = Trainer(recipe, None, training=False)
    state = ckpt["model"]
    if args.ema:
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
    from .engine.checkpoint import is_torch_file

    if is_checkpoint_path(target) or is_torch_file(Path(target)):
        if sets:
            raise UserError("--set applies to recipes; a checkpoint carries its own recipe")
        return source_from_checkpoint(target, need_data=False)
    return build_source(load_recipe(find_recipe(target), sets), need_data=False)


def _print_json(obj) -> None:
    import json

    print(json.dumps(obj, indent=2))


def cmd_summary(args) -> int:
    from .analysis.summary import format_summary, summarize

    from .analysis.source import example_batch

    src = _analysis_source(args.target, args.set)
    x, what = example_batch(src)
    x = x[:, :1] if src.info.frames else x[:1]
    s = summarize(src.model, x, src.recipe.T)
    if args.json:
        _print_json({"source": args.target, "model": src.recipe.model.name, "input": what, **s})
    else:
        print(format_summary(s, f"{src.recipe.model.name} from {args.target}\n"
                                f"counted on one sample of the {what}"))
    return 0


def cmd_energy(args) -> int:
    from .analysis.energy import energy_command

    return energy_command(args, find_recipe)


def cmd_export(args) -> int:
    from .deploy.command import export_command

    return export_command(args.checkpoint, args.out, args.format, args.nir_threshold)


def cmd_doctor(args) -> int:
    from .analysis.doctor import diagnose, format_report

    rep = diagnose()
    print(format_report(rep))
    return 0 if rep.problem is None else 1


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.epochs=1 --set T=2")


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are one :class:`UserError` line like every other (no usage block)."""

    def error(self, message: str):
        import re

        m = re.match(r"argument command: invalid choice: '([^']*)'", message)
        if m and self._subparsers is not None:
            commands = [c for a in self._subparsers._group_actions for c in (a.choices or {})]
            message = (f"unknown command '{m.group(1)}'{closest(m.group(1), commands)}; "
                       f"the commands are {', '.join(commands)}")
        raise UserError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sj-bwsnn", description="Train binary-weight SNNs from YAML recipes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a recipe")
    t.add_argument("recipe", help="YAML path or bundled recipe name")
    _add_set(t)
    t.add_argument("--out", help="output folder (default runs/<recipe>/<time>)")
    t.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                   help="continue the run in --out from last.pt; --resume auto: continue it when "
                        "last.pt exists, else start it (torchrun --max-restarts)")
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

    en = sub.add_parser("energy", help="firing rates, operation counts and energy on test data "
                                       "(SpikingJelly's op counters and the paper convention)")
    en.add_argument("recipe")
    en.add_argument("--checkpoint", required=True)
    _add_set(en)
    en.add_argument("--batches", type=int, help="test batches to run (default: all)")
    en.add_argument("--convention", default="sj", metavar="sj|paper",
                    help="counts of the table and the energy: sj = SpikingJelly's exact op counters "
                         "(default), paper = FLOPs x firing rate (Spikformer / SEW-ResNet); both "
                         "are reported")
    en.add_argument("--model", default="horowitz", metavar="horowitz|simple|lemaire",
                    help="energy model: horowitz = E_MAC x MACs + E_AC x ACs (default), simple = "
                         "SpikingJelly's, with memory traffic, lemaire = SpikingJelly's analytical "
                         "model (Lemaire et al. 2022); see docs/analysis.md")
    en.add_argument("--precision", default="fp32", metavar="fp32|fp16|int8",
                    help="arithmetic / storage preset (Horowitz 2014); default fp32")
    en.add_argument("--binary-weights", action="store_true",
                    help="cost 1-bit layers as 1-bit hardware: +-1 accumulates at a 32-bit "
                         "integer add, weights read at 1 bit")
    en.add_argument("--e-mac", type=float, help="pJ per MAC (overrides the preset; fp32: 4.6)")
    en.add_argument("--e-ac", type=float, help="pJ per AC (overrides the preset; fp32: 0.9)")
    en.add_argument("--neurobench", action="store_true",
                    help="add NeuroBench's metrics (footprint, connection / activation sparsity, "
                         "synaptic operations)")
    en.add_argument("--json", action="store_true", help="print the same numbers as JSON")
    en.add_argument("--plot", metavar="FILE.png", help="bar chart of firing rate per layer")
    en.set_defaults(func=cmd_energy)

    x = sub.add_parser("export", help="deployment file: 1-bit packed (sj_bwsnn.load_exported) "
                                      "or a NIR graph (SpikingJelly, snnTorch, other NIR readers)")
    x.add_argument("checkpoint")
    x.add_argument("--out", required=True)
    x.add_argument("--format", choices=("packed", "nir"), default="packed",
                   help="packed (default): 1-bit signs + alphas, exact reload; nir: a NIR graph "
                        "(needs pip install 'sj-bwsnn[nir]'), see docs/deploy.md")
    x.add_argument("--nir-threshold", choices=("sj", "spec"),
                   help="nir only: sj (default) writes v_th for readers firing at v >= v_th "
                        "(SpikingJelly); spec writes the float32 below it for readers following "
                        "NIR's v > v_th (snnTorch, Norse, hardware)")
    x.set_defaults(func=cmd_export)

    d = sub.add_parser("doctor", help="check versions, CUDA, CuPy and the neuron backend")
    d.set_defaults(func=cmd_doctor)
    return p


def _one_line(e: UserError) -> str:
    """The message of ``e``; a UserError raised in a DataLoader worker process arrives wrapped in
    the worker's traceback ("Caught UserError in DataLoader worker ..."): its own last line."""
    text = str(e).strip()
    if "\n" in text and text.startswith("Caught UserError"):
        text = text.splitlines()[-1].split("UserError: ", 1)[-1]
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            where = f"sj-bwsnn {args.command}"
            raise UserError(f"unrecognized arguments: {' '.join(extra)} (see `{where} --help`)")
    except UserError as e:  # a mistake on the command line itself
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    debug = args.debug or os.environ.get("SJ_BWSNN_DEBUG") == "1"
    try:
        return args.func(args)
    except UserError as e:
        if debug:
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

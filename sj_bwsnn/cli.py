"""The ``sj-bwsnn`` command.

    sj-bwsnn train RECIPE [--set key.sub=value ...] [--out DIR] [--resume]
    torchrun --nproc_per_node=N -m sj_bwsnn train RECIPE ...   (DDP; rank 0 writes)
    sj-bwsnn eval RECIPE --checkpoint FILE [--ema] [--set ...]
    sj-bwsnn recipes

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
    from .engine.build import pick_device
    from .engine.checkpoint import atomic_write_bytes

    path = find_recipe(args.recipe)
    recipe = load_recipe(path, args.set)
    out = Path(args.out) if args.out else Path("runs") / path.stem / time.strftime("%Y%m%d-%H%M%S")
    distributed.init_distributed(pick_device(recipe.train.device))
    main = distributed.world()[0] == 0
    if main:
        _prepare_out(out, args.resume)
    try:
        trainer = Trainer(recipe, out)
        if args.resume:
            trainer.load_state(load_checkpoint(out / "last.pt"), out / "last.pt")
            if main:
                print(f"resuming {out} after epoch {trainer.epoch}")
        elif main:
            import yaml

            text = yaml.safe_dump(recipe.to_dict(), sort_keys=False).encode()
            atomic_write_bytes(out / "recipe.yaml", lambda f: f.write(text))
        kind = "binary" if recipe.model.binary else "full-precision"
        if main:
            ranks = f" x{trainer.world} ranks" if trainer.world > 1 else ""
            kd = f", distilling from {recipe.teacher.checkpoint}" if trainer.teacher else ""
            print(f"training {recipe.model.name} ({kind}) T={recipe.T} on {recipe.data.name} "
                  f"[{trainer.device}{ranks}]{kd} -> {out}", flush=True)
        try:
            trainer.fit()
        except KeyboardInterrupt:
            print(f"\ninterrupted after epoch {trainer.epoch}; the last finished epoch is saved in "
                  f"{out / 'last.pt'}. Resume with: sj-bwsnn train {args.recipe} --out {out} "
                  f"--resume", file=sys.stderr)
            return 130
        if main:
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
        state = ckpt["ema"]
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sj-bwsnn", description="Train binary-weight SNNs from YAML recipes.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for input errors")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a recipe")
    t.add_argument("recipe", help="YAML path or bundled recipe name")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.epochs=1 --set T=2")
    t.add_argument("--out", help="output folder (default runs/<recipe>/<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from last.pt")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on the recipe's test data")
    e.add_argument("recipe")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--ema", action="store_true", help="evaluate the EMA weights in the checkpoint")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("recipes", help="list the bundled recipes")
    r.set_defaults(func=cmd_recipes)
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

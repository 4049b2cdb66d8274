"""How well OPZO's (or DFA's) update points along the spatial-BP gradient while it trains.

    python bench/opzo_alignment.py                          # digits_opzo: opzo variants and dfa
    python bench/opzo_alignment.py --epochs 3 --every 5 --config "opzo:antithetic=false" "dfa:"

Each ``--config`` is ``METHOD:KEY=VALUE,...`` (keys of the ``opzo:`` section). The recipe is trained
with that method for ``--epochs`` epochs through the trainer's own model, optimizer and method;
every ``--every`` steps, before the real step, OTTT's gradient (spatial BP with the same traces,
``train.method: ottt``) is taken on the same weights and batch with a zero learning rate, and the
cosine between it and the method's update (the gradient the real step then applies) is recorded
per hidden layer (every weight except the classifier's, which both get exactly) and over all of
them. Prints the mean over the first and the last epoch and writes JSON (default
``bench/results/opzo_alignment_<device>_<UTC time>.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import stamped, write_record  # noqa: E402
from spikingjelly.activation_based import functional  # noqa: E402

from sj_bwsnn.cli import find_recipe  # noqa: E402
from sj_bwsnn.engine import Trainer, load_recipe  # noqa: E402
from sj_bwsnn.engine.methods import OTTT, trace_decay_for  # noqa: E402

DEFAULT = ["opzo:antithetic=false,noise_scale=0.1", "opzo:antithetic=false,noise_scale=0.3",
           "opzo:", "opzo:samples=2", "dfa:"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0).item()


def measure(path, config: str, epochs: int, every: int, sets: list[str]) -> dict:
    method, _, keys = config.partition(":")
    extra = [f"opzo.{kv}" for kv in keys.split(",") if kv]
    recipe = load_recipe(path, sets + extra + [f"train.method={method}", "train.plot=false",
                                               "train.tensorboard=false", "train.device=cpu"])
    trainer = Trainer(recipe, None)
    model = trainer.model
    reference = OTTT(trace_decay_for(recipe.neuron))
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    head = {id(p) for p in model.get_classifier().parameters()}
    hidden = [(n, p) for n, p in model.named_parameters() if p.dim() > 1 and id(p) not in head]
    per_epoch = []
    for _ in range(epochs):
        model.train()
        rows = []
        for i, (x, y) in enumerate(trainer.train_loader):
            x, y = trainer._prepare(x), y.to(trainer.device)
            if i % every == 0:
                reference.train_step(model, x, y, trainer.objective, frozen)
                functional.reset_net(model)
                bp = {n: p.grad.clone() for n, p in hidden}
            trainer.method.train_step(model, x, y, trainer.objective, trainer.optimizer,
                                      trainer.precision)
            functional.reset_net(model)
            if i % every == 0:
                got = {n: p.grad for n, p in hidden}
                rows.append([cosine(got[n], bp[n]) for n, _ in hidden]
                            + [cosine(torch.cat([got[n].flatten() for n, _ in hidden]),
                                      torch.cat([bp[n].flatten() for n, _ in hidden]))])
        per_epoch.append([statistics.mean(col) for col in zip(*rows)])
    return {"config": config, "layers": [n for n, _ in hidden] + ["all hidden"],
            "cosine_per_epoch": per_epoch, "test_acc": trainer.evaluate()["test_acc"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="digits_opzo")
    ap.add_argument("--config", nargs="+", default=DEFAULT)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--every", type=int, default=4, help="measure every N steps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = find_recipe(args.recipe)
    rows = []
    for config in args.config:
        row = measure(path, config, args.epochs, args.every, args.set)
        rows.append(row)
        first, last = row["cosine_per_epoch"][0], row["cosine_per_epoch"][-1]
        print(f"{config:45s} cosine with OTTT, epoch 1: {' '.join(f'{c:.2f}' for c in first)}  "
              f"epoch {args.epochs}: {' '.join(f'{c:.2f}' for c in last)}  "
              f"(layers {', '.join(row['layers'])}; test acc {row['test_acc']:.4f})", flush=True)
    out = args.out or stamped(ROOT / "bench" / "results", "opzo_alignment")
    write_record(out, "bench/opzo_alignment.py", recipe=args.recipe, overrides=args.set,
                 epochs=args.epochs, every=args.every, rows=rows)


if __name__ == "__main__":
    main()

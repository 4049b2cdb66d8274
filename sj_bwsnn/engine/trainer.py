"""The training loop behind ``sj-bwsnn train`` and ``sj-bwsnn eval``.

One :class:`Trainer` per run: it builds data, model, optimizer (timm ``create_optimizer_v2``),
schedule (timm ``create_scheduler_v2``), method and objective from a :class:`Recipe`, then per
epoch trains, evaluates, appends to ``OUT/metrics.json`` and saves ``OUT/last.pt`` (and
``OUT/best.pt`` when test accuracy improves), every file written atomically. ``--resume``
continues from ``OUT/last.pt`` with model, optimizer, schedule, metrics and RNG states restored.
The network's neuron state is reset (``functional.reset_net``) after every batch.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import timm
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
import torch
from spikingjelly.activation_based import functional
from tqdm import tqdm

from ..data import DataInfo, build_loaders
from ..errors import UserError, closest
from ..layers import BinaryConv2d, BinaryLinear
from ..neuron import neuron_kwargs_from_config
from .checkpoint import atomic_write_bytes, load_checkpoint, load_model_state, save_checkpoint
from .methods import build_method
from .objectives import build_objective
from .recipe import Recipe, recipe_from_dict

SYNC_EVERY = 20  # steps between host syncs for the progress bar and the finite-loss check


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is {name!r} but CUDA is not available; use auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None


def build_model(recipe: Recipe, info: DataInfo) -> torch.nn.Module:
    """The recipe's model through ``timm.create_model`` with neuron, T, classes and channels."""
    import sj_bwsnn.models  # noqa: F401  (registers our models with timm)

    neuron, neuron_kwargs = neuron_kwargs_from_config(recipe.neuron)
    name = recipe.model.name
    if name not in timm.list_models(name):
        ours = timm.list_models("bw_*")
        raise UserError(f"model.name: unknown model {name!r}{closest(name, ours)}; "
                        f"sj_bwsnn models: {', '.join(ours)}")
    kwargs = dict(num_classes=info.num_classes, in_chans=info.in_chans, T=recipe.T,
                  binary=recipe.model.binary, neuron=neuron, neuron_kwargs=neuron_kwargs,
                  scaling=recipe.model.scaling, detach_alpha=recipe.model.detach_alpha)
    kwargs.update(recipe.model.kwargs)
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:
        raise UserError(f"model.kwargs: {name} does not accept these arguments ({e})") from None


def param_groups(model: torch.nn.Module, weight_decay: float, binary_weight_decay: float):
    """Three groups: latent binary weights, other weights, and biases/norms (no decay)."""
    binary_ids = {id(m.weight) for m in model.modules() if isinstance(m, (BinaryConv2d, BinaryLinear))}
    groups = {"binary": [], "decay": [], "no_decay": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        key = "binary" if id(p) in binary_ids else ("no_decay" if p.ndim <= 1 else "decay")
        groups[key].append(p)
    decay = {"binary": binary_weight_decay, "decay": weight_decay, "no_decay": 0.0}
    return [{"params": ps, "weight_decay": decay[k]} for k, ps in groups.items() if ps]


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and k != "kwargs":
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


class Trainer:
    """Build everything a run needs from ``recipe``; :meth:`fit` trains, :meth:`evaluate` tests."""

    def __init__(self, recipe: Recipe, out: Path | None = None):
        self.recipe = recipe
        self.out = out
        seed_everything(recipe.seed)
        self.device = pick_device(recipe.train.device)
        self.train_loader, self.test_loader, self.info = build_loaders(recipe.data, recipe.seed)
        self.model = build_model(recipe, self.info).to(self.device)
        self.objective = build_objective(recipe)
        self.eval_loss = torch.nn.CrossEntropyLoss()
        self.method = build_method(recipe)
        o = recipe.optim
        try:
            self.optimizer = create_optimizer_v2(
                param_groups(self.model, o.weight_decay, o.binary_weight_decay), opt=o.name,
                lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)
        except (ValueError, AssertionError) as e:
            raise UserError(f"optim.name: {o.name!r} is not a timm optimizer ({e})") from None
        self.scheduler = None
        if o.sched != "none":
            try:
                self.scheduler, _ = create_scheduler_v2(
                    self.optimizer, sched=o.sched, num_epochs=recipe.train.epochs,
                    warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr, min_lr=o.min_lr)
            except (ValueError, AssertionError) as e:
                raise UserError(f"optim.sched: {o.sched!r} is not usable ({e})") from None
            if self.scheduler is None:
                raise UserError(f"optim.sched: unknown schedule {o.sched!r} (try cosine, step, none)")
        self.epoch = 0
        self.metrics: list[dict] = []
        self.best_acc = -1.0

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> dict:
        return {
            "recipe": self.recipe.to_dict(), "epoch": self.epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "metrics": self.metrics, "best_acc": self.best_acc,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                    "numpy_pos": int(np.random.get_state()[2]),
                    "python": json.dumps(random.getstate()),
                    "loader": self.train_loader.generator.get_state()},
        }

    def load_state(self, ckpt: dict, path: Path) -> None:
        saved = _flatten(recipe_from_dict(ckpt["recipe"]).to_dict())
        now = _flatten(self.recipe.to_dict())
        saved["train.epochs"] = now["train.epochs"]  # extending a run is allowed
        diff = [k for k in now if saved.get(k) != now[k]]
        if diff:
            raise UserError(f"--resume: the recipe differs from the one {path} was trained with "
                            f"(first difference: {diff[0]}); resume with the same recipe and --set")
        load_model_state(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.metrics, self.best_acc = ckpt["epoch"], ckpt["metrics"], ckpt["best_acc"]
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), rng["numpy_pos"], 0, 0.0))
        random.setstate(tuple(tuple(v) if isinstance(v, list) else v
                              for v in json.loads(rng["python"])))
        self.train_loader.generator.set_state(rng["loader"])

    # -- loops ---------------------------------------------------------------------------------

    def train_one_epoch(self) -> dict:
        model, dev = self.model, self.device
        model.train()
        total = len(self.train_loader)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        bar = tqdm(self.train_loader, total=total, leave=False, dynamic_ncols=True,
                   desc=f"epoch {self.epoch + 1}/{self.recipe.train.epochs}", disable=None)
        for step, (x, y) in enumerate(bar, 1):
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss, logits = self.method.train_step(model, x, y, self.objective, self.optimizer)
            functional.reset_net(model)
            loss_sum += loss.float() * y.numel()
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
            if step % SYNC_EVERY == 0 or step == total:
                avg = loss_sum.item() / seen
                if not math.isfinite(avg):
                    raise UserError(
                        f"training loss became {avg} in epoch {self.epoch + 1} by step {step}; "
                        f"stopped without saving this epoch (lower optim.lr or check the data)"
                        + (f"; the last good checkpoint is {self.out / 'last.pt'}"
                           if self.out and (self.out / "last.pt").exists() else ""))
                bar.set_postfix(loss=f"{avg:.4f}", acc=f"{correct.item() / seen:.4f}")
        return {"train_loss": loss_sum.item() / max(seen, 1), "train_acc": correct.item() / max(seen, 1)}

    @torch.no_grad()
    def evaluate(self) -> dict:
        model, dev = self.model, self.device
        model.eval()
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        for x, y in self.test_loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            logits = model(x)
            functional.reset_net(model)
            loss_sum += self.eval_loss(logits.float(), y) * y.numel()
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
        return {"test_loss": loss_sum.item() / max(seen, 1), "test_acc": correct.item() / max(seen, 1)}

    def fit(self) -> dict:
        """Train the remaining epochs; returns the last epoch's metrics."""
        assert self.out is not None
        epochs = self.recipe.train.epochs
        if self.epoch >= epochs:
            print(f"nothing to do: {self.out / 'last.pt'} already finished {self.epoch} epochs "
                  f"(raise train.epochs to continue)")
        while self.epoch < epochs:
            t0 = time.perf_counter()
            row = {"epoch": self.epoch + 1, **self.train_one_epoch(), **self.evaluate()}
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["time_s"] = round(time.perf_counter() - t0, 3)
            self.epoch += 1
            if self.scheduler:
                self.scheduler.step(self.epoch)
            self.metrics.append(row)
            improved = row["test_acc"] > self.best_acc
            self.best_acc = max(self.best_acc, row["test_acc"])
            state = self.state()
            save_checkpoint(self.out / "last.pt", state)
            if improved:
                save_checkpoint(self.out / "best.pt", state)
            _write_json(self.out / "metrics.json", self.metrics)
            print(f"epoch {row['epoch']:>3}/{epochs}  train_loss={row['train_loss']:.4f} "
                  f"train_acc={row['train_acc']:.4f}  test_loss={row['test_loss']:.4f} "
                  f"test_acc={row['test_acc']:.4f}  lr={row['lr']:.2e}  {row['time_s']:.1f}s",
                  flush=True)
        return self.metrics[-1] if self.metrics else {}

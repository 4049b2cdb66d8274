"""The training loop behind ``sj-bwsnn train`` and ``sj-bwsnn eval``.

One :class:`Trainer` per run: it builds data, model, optimizer (timm ``create_optimizer_v2``),
schedule (timm ``create_scheduler_v2``, cosine with warmup), Mixup/CutMix (timm ``Mixup``),
model EMA (timm ``ModelEmaV3``), precision (:class:`~.precision.Precision`: AMP, grad scaler,
clipping), teacher (:mod:`.distill`), method and objective from a :class:`Recipe`, and compiles
the method's entry when ``train.compile`` asks (:mod:`.compile`). Per epoch it
trains, evaluates, appends to ``OUT/metrics.json``, logs TensorBoard scalars and saves
``OUT/last.pt`` (and ``OUT/best.pt`` when test accuracy improves), every file written
atomically; ``OUT/curves.png`` at the end. ``--resume`` restores model, optimizer, schedule,
grad scaler, EMA, the method's own state (``method.state_dict()`` where it has one: the feedback
matrices of ``opzo``/``dfa``), metrics and RNG states (every rank's under torchrun), so a resumed run continues
exactly (bitwise on CPU with ``train.deterministic``). Under torchrun every method trains on the ranks' mean gradient
(:func:`.distributed.data_parallel`: DDP for ``bptt``/``dsr``, a gradient all-reduce in
``Precision.step`` for the step-wise methods), buffers are broadcast from rank 0 before each
evaluation, and only rank 0 writes.
Event frames ``[N, T, C, H, W]`` are moved to ``[T, N, C, H, W]`` before the model. The
network's neuron state is reset (``functional.reset_net``) after every batch.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from spikingjelly.activation_based import functional
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..data import build_loaders, to_model_input
from ..errors import UserError
from ..neuron import check_backend_available
from . import distributed
from .build import _build_mixup, build_model, param_groups, pick_device, seed_everything
from .checkpoint import atomic_write_bytes, load_model_state, save_checkpoint
from .compile import compile_run
from .distill import build_teacher, init_from_checkpoint
from .methods import build_method
from .objectives import build_objective
from .precision import Precision
from .recipe import RESUMABLE_CHANGES, Recipe, recipe_from_dict, setting_differences
from .runlog import TensorBoard, plot_curves, progress

__all__ = ["Trainer", "build_model", "param_groups", "pick_device", "seed_everything"]

SYNC_EVERY = 20  # steps between host syncs for the progress bar and the finite-loss check
_EPOCH_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "test_loss_ema",
               "test_acc_ema", "lr", "time_s")  # the rest of a row is the method's epoch_stats


def _write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


class TrainingInterrupted(Exception):
    """Raised after SIGINT once a resumable checkpoint of the position is saved."""

    def __init__(self, epoch: int, batch: int, total: int):
        super().__init__(f"stopped in epoch {epoch + 1} after batch {batch}/{total}")
        self.epoch, self.batch, self.total = epoch, batch, total


class Trainer:
    """Build everything a run needs from ``recipe``; :meth:`fit` trains, :meth:`evaluate` tests."""

    def __init__(self, recipe: Recipe, out: Path | None = None, training: bool = True):
        """``training=False`` (``sj-bwsnn eval``) skips the teacher and ``model.init_from``."""
        self.recipe, self.out = recipe, out
        t = recipe.train
        self.device = distributed.init_distributed(pick_device(t.device))
        check_backend_available(recipe.neuron.backend, self.device)
        self.rank, self.world = distributed.world()
        self.is_main = self.rank == 0
        seed_everything(recipe.seed + self.rank, t.deterministic)
        self.method = build_method(recipe)  # first: its refusals (train.compile) before any data
        self.train_loader, self.test_loader, self.info = self.build_data()
        self.mixup = _build_mixup(recipe, self.info.num_classes)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        self.model = build_model(recipe, self.info)
        self.method.check_model(self.model)  # before the run writes anything
        if recipe.model.init_from and training:
            init_from_checkpoint(self.model, recipe.model.init_from)
        self.model = self.model.to(self.device, memory_format=self.memory_format)
        self.teacher = (build_teacher(recipe, self.info, self.device, self.memory_format)
                        if training else None)
        self.objective = build_objective(recipe, self.teacher)
        # what the method trains (DDP-wrapped for bptt/dsr under torchrun); every rank now holds
        # rank 0's weights, so the EMA below starts from them too
        self.net, grad_sync = distributed.data_parallel(self.model, self.device,
                                                        self.method.single_forward)
        self.precision = Precision(t.amp, self.device, t.clip_grad, grad_sync)
        self.ema = None
        if t.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t.ema_decay)
        self._build_optim()
        # train.compile: the method's compile_entry on the model and its EMA copy (compile.py)
        self.compiled = compile_run(t.compile, t.compile_fullgraph, self.method,
                                    [self.model] + ([self.ema.module] if self.ema else []),
                                    self.train_loader.batch_size, self.test_loader.batch_size,
                                    verbose=self.is_main)
        self.epoch, self.step = 0, 0
        self.batch_in_epoch = 0  # batches of the current epoch already trained (mid-epoch resume)
        self._partial = (0.0, 0, 0)  # that part's (loss sum, correct, seen)
        self._epoch_loader_state = self.train_loader.generator.get_state()
        self._stop_requested = False  # set by SIGINT: save after this step and stop
        self.metrics: list[dict] = []
        self.best_acc = -1.0

    def build_data(self):
        """``(train_loader, test_loader, DataInfo)`` of the run, from ``recipe.data``.

        The one data hook: a subclass that trains on other data overrides it (the continual
        runner, :mod:`sj_bwsnn.continual`, returns its first task's loaders and later assigns
        ``train_loader`` / ``test_loader`` per task).
        """
        r = self.recipe
        return build_loaders(r.data, r.seed, r.T, self.rank, self.world,
                             drop_last=r.data.mixup > 0 or r.data.cutmix > 0)

    def _build_optim(self) -> None:
        o = self.recipe.optim
        try:
            self.optimizer = create_optimizer_v2(
                param_groups(self.model, o.weight_decay, o.binary_weight_decay), opt=o.name,
                lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum)
        except (ValueError, AssertionError) as e:
            raise UserError(f"optim.name: {o.name!r} is not a timm optimizer ({e})") from None
        self.scheduler = None
        if o.sched != "none":
            extra = {"decay_milestones": o.decay_milestones} if o.decay_milestones else {}
            try:
                self.scheduler, _ = create_scheduler_v2(
                    self.optimizer, sched=o.sched, num_epochs=self.recipe.train.epochs,
                    warmup_epochs=o.warmup_epochs, warmup_lr=o.warmup_lr, min_lr=o.min_lr,
                    decay_rate=o.decay_rate, **extra)
            except (ValueError, AssertionError) as e:
                raise UserError(f"optim.sched: {o.sched!r} is not usable ({e})") from None
            if self.scheduler is None:
                raise UserError(f"optim.sched: unknown schedule {o.sched!r} (try cosine, step, none)")

    # -- state ---------------------------------------------------------------------------------

    def _rng_state(self) -> dict:
        """This process's random streams (torch, CUDA, NumPy, Python, the loader's generators)
        and its part of the epoch's running metrics (``partial``: each rank sums its own shard)."""
        return {"partial": list(self._partial), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                "numpy_pos": int(np.random.get_state()[2]),
                "python": json.dumps(random.getstate()),
                "loader": self.train_loader.generator.get_state(),
                "epoch_loader": self._epoch_loader_state}

    def _gather_rng(self) -> list[dict] | None:
        """Every rank's :meth:`_rng_state`, rank by rank (a collective: all ranks call it at the
        same save point); None for a single process."""
        if self.world == 1:
            return None
        states = [None] * self.world
        torch.distributed.all_gather_object(states, self._rng_state())
        return states

    def state(self, rng_ranks: list[dict] | None = None) -> dict:
        """The checkpoint: ``rng`` is this process's streams; under torchrun ``rng_ranks`` (from
        :meth:`_gather_rng`) holds every rank's, so each rank resumes its own."""
        return {
            "recipe": self.recipe.to_dict(), "epoch": self.epoch, "step": self.step,
            "batch_in_epoch": self.batch_in_epoch, "partial": list(self._partial),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.precision.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            # a method's own state (opzo/dfa feedback matrices); None for stateless methods
            "method": self.method.state_dict() if hasattr(self.method, "state_dict") else None,
            "metrics": self.metrics, "best_acc": self.best_acc,
            "rng": self._rng_state(), "rng_ranks": rng_ranks,
        }

    def load_state(self, ckpt: dict, path: Path) -> None:
        diff = setting_differences(self.recipe, recipe_from_dict(ckpt["recipe"]))
        diff = [k for k in diff if k not in RESUMABLE_CHANGES]  # extending a run, compiling
        if diff:
            raise UserError(f"--resume: the recipe differs from the one {path} was trained with "
                            f"(first difference: {diff[0]}); resume with the same recipe and --set")
        load_model_state(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.precision.load_state_dict(ckpt.get("scaler") or {})
        if self.ema and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        if ckpt.get("method") is not None and hasattr(self.method, "load_state_dict"):
            self.method.load_state_dict(ckpt["method"])
        self.epoch, self.metrics, self.best_acc = ckpt["epoch"], ckpt["metrics"], ckpt["best_acc"]
        self.step = ckpt.get("step", 0)
        self.batch_in_epoch = ckpt.get("batch_in_epoch", 0)
        self._partial = tuple(ckpt.get("partial") or (0.0, 0, 0))
        rng, ranks = ckpt["rng"], ckpt.get("rng_ranks")
        if self.world > 1:  # each rank its own streams, when saved by a run of this many ranks
            rng = ranks[self.rank] if ranks and len(ranks) == self.world else None
        if rng is not None:  # else (another world size) streams restart from seed + rank
            self._partial = tuple(rng.get("partial") or self._partial)
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32),
                                 rng["numpy_pos"], 0, 0.0))
            random.setstate(tuple(tuple(v) if isinstance(v, list) else v
                                  for v in json.loads(rng["python"])))
            # mid-epoch: rewind the worker-seed generator to the epoch's start, so the resumed
            # epoch's loader draws the same worker seeds as the interrupted one did
            self.train_loader.generator.set_state(rng["epoch_loader"] if self.batch_in_epoch
                                                  else rng["loader"])

    # -- loops ---------------------------------------------------------------------------------

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """To the device; frames to time-first ``[T, N, C, H, W]``; channels_last for images."""
        x = to_model_input(x.to(self.device, non_blocking=True), self.info)
        return x if self.info.frames else x.contiguous(memory_format=self.memory_format)

    def _mix(self, x: torch.Tensor, y: torch.Tensor):
        """timm Mixup/CutMix on a batch; frames ``[N, T, C, H, W]`` mix as ``[N, T*C, H, W]``."""
        if self.info.frames:
            shape = x.shape
            x, y = self.mixup(x.flatten(1, 2), y)
            return x.view(shape), y
        return self.mixup(x, y)

    def train_one_epoch(self) -> dict:
        """Train the rest of the current epoch (all of it unless resuming mid-epoch).

        Every ``train.checkpoint_every`` steps, and after the step during which SIGINT arrived,
        ``OUT/last.pt`` records the position in the epoch (:class:`TrainingInterrupted` follows
        the latter). A non-finite loss stops the run naming its step, before anything is saved.
        """
        net, dev, loader = self.net, self.device, self.train_loader
        net.train()
        done = self.batch_in_epoch
        if done == 0:
            self._epoch_loader_state = loader.generator.get_state()
        loader.sampler.set_epoch(self.epoch)
        loader.sampler.set_start(done * loader.batch_size)
        total = done + len(loader)
        loss0, correct0, seen = self._partial
        loss_sum = torch.full((), float(loss0), device=dev)
        correct = torch.full((), int(correct0), device=dev, dtype=torch.long)
        first_bad = torch.zeros((), device=dev, dtype=torch.long)  # 1-based step of the first NaN
        every = self.recipe.train.checkpoint_every
        desc = f"epoch {self.epoch + 1}/{self.recipe.train.epochs}"
        bar = progress(loader, len(loader), desc, self.is_main)
        for i, (x, y) in enumerate(bar, done + 1):
            if self.mixup is not None:
                x, y = self._mix(x, y)
            x, y = self._prepare(x), y.to(dev, non_blocking=True)
            self.compiled.begin_batch()
            loss, logits = self.method.train_step(net, x, y, self.objective, self.optimizer,
                                                  self.precision)
            functional.reset_net(net)
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
            hard = y.argmax(1) if y.dim() == 2 else y
            first_bad = torch.where((first_bad == 0) & ~torch.isfinite(loss), i, first_bad)
            loss_sum += loss.float() * hard.numel()
            correct += (logits.argmax(1) == hard).sum()
            seen += hard.numel()
            save = self._stop_requested or (every and self.step % every == 0)
            if save or i % SYNC_EVERY == 0 or i == total:
                self._check_finite(distributed.first_nonzero(int(first_bad), dev))
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}",
                                acc=f"{correct.item() / seen:.4f}")
            if save:
                self.batch_in_epoch, self._partial = i, (loss_sum.item(), correct.item(), seen)
                rng_ranks = self._gather_rng()
                if self.is_main and self.out is not None:
                    save_checkpoint(self.out / "last.pt", self.state(rng_ranks))
                if self._stop_requested:
                    raise TrainingInterrupted(self.epoch, i, total)
        self.batch_in_epoch, self._partial = 0, (0.0, 0, 0)
        loss_total, right, n = distributed.all_sum([loss_sum.item(), correct.item(), seen], dev)
        return {"train_loss": loss_total / max(n, 1), "train_acc": right / max(n, 1),
                **self._method_stats()}

    def _method_stats(self) -> dict:
        """The method's own diagnostics for the epoch (``epoch_stats() -> {key: (sum, count)}``,
        e.g. IDE's solver residual), summed over ranks; absent for methods without them. After a
        mid-epoch resume they cover the batches trained since."""
        stats = self.method.epoch_stats() if hasattr(self.method, "epoch_stats") else {}
        keys = sorted(stats)
        if not keys:
            return {}
        flat = distributed.all_sum([float(v) for k in keys for v in stats[k]], self.device)
        return {k: flat[2 * i] / flat[2 * i + 1] for i, k in enumerate(keys) if flat[2 * i + 1]}

    def _check_finite(self, first_bad: int) -> None:
        if first_bad:
            last = self.out / "last.pt" if self.out else None
            keep = (f"; the last good checkpoint {last} is kept" if last and last.exists()
                    else "; nothing was saved")
            raise UserError(f"training loss became non-finite (nan/inf) at step {first_bad} of "
                            f"epoch {self.epoch + 1}; stopped{keep} (lower optim.lr, use "
                            f"train.clip_grad, or check the data)")

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module | None = None) -> dict:
        """Test loss and accuracy of ``model`` (default: the trained model), summed over ranks;
        every rank first takes rank 0's buffers, so all evaluate the model rank 0 saves."""
        model = model if model is not None else self.model
        distributed.broadcast_state(model, parameters=False)
        model.eval()
        dev = self.device
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev, dtype=torch.long)
        seen = 0
        for x, y in self.test_loader:
            x, y = self._prepare(x), y.to(dev, non_blocking=True)
            self.compiled.begin_batch()
            with self.precision.autocast():
                logits = model(x)
            functional.reset_net(model)
            loss_sum += torch.nn.functional.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += y.numel()
        loss_total, right, n = distributed.all_sum([loss_sum.item(), correct.item(), seen], dev)
        return {"test_loss": loss_total / max(n, 1), "test_acc": right / max(n, 1)}

    def _epoch_row(self) -> dict:
        t0 = time.perf_counter()
        row = {"epoch": self.epoch + 1, **self.train_one_epoch(), **self.evaluate()}
        if self.ema is not None:
            ema = self.evaluate(self.ema.module)
            row.update(test_loss_ema=ema["test_loss"], test_acc_ema=ema["test_acc"])
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["time_s"] = round(time.perf_counter() - t0, 3)
        return row

    def fit(self, until: int | None = None) -> dict:
        """Train the remaining epochs (or stop after epoch ``until``, e.g. to fit a job's time
        limit; the schedule still follows ``train.epochs``); returns the last epoch's metrics."""
        assert self.out is not None
        epochs = self.recipe.train.epochs
        stop = min(epochs, until) if until is not None else epochs
        main = self.is_main
        if self.epoch >= epochs and main:
            print(f"nothing to do: {self.out / 'last.pt'} already finished {self.epoch} epochs "
                  f"(raise train.epochs to continue)")
        tb = TensorBoard(self.out / "tb" if main and self.recipe.train.tensorboard else None)
        previous = self._install_sigint()
        try:
            while self.epoch < stop:
                row = self._epoch_row()
                self.epoch += 1
                if self.scheduler:
                    self.scheduler.step(self.epoch)
                self.metrics.append(row)
                improved = row["test_acc"] > self.best_acc
                self.best_acc = max(self.best_acc, row["test_acc"])
                rng_ranks = self._gather_rng()
                if main:
                    self._save(improved, rng_ranks)
                    tb.add(row, self.epoch)
                    self._print(row, epochs)
        finally:
            tb.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if main and self.recipe.train.plot and self.metrics:
            plot_curves(self.metrics, self.out / "curves.png")
        return self.metrics[-1] if self.metrics else {}

    def _install_sigint(self):
        """First Ctrl-C: finish the step, save a resumable checkpoint, stop. Second: abort.

        Single process only: under DDP the ranks could stop at different steps and hang in a
        collective, so there Ctrl-C keeps its default meaning (last.pt from the last save stays).
        """
        if self.world > 1 or threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            print("\nstopping after this step (Ctrl-C again to abort without saving)",
                  file=sys.stderr, flush=True)

        return signal.signal(signal.SIGINT, handler)

    def _save(self, improved: bool, rng_ranks: list[dict] | None = None) -> None:
        """best.pt (when improved) before last.pt: killed in between, the run resumes from the
        older last.pt and redoes the epoch, instead of never writing that best epoch."""
        first = self.out / ("best.pt" if improved else "last.pt")
        save_checkpoint(first, self.state(rng_ranks))
        if improved:  # the same bytes: copy the file instead of serialising the state again
            with open(first, "rb") as src:
                atomic_write_bytes(self.out / "last.pt", lambda f: shutil.copyfileobj(src, f))
        _write_json(self.out / "metrics.json", self.metrics)

    @staticmethod
    def _print(row: dict, epochs: int) -> None:
        ema = f" test_acc_ema={row['test_acc_ema']:.4f}" if "test_acc_ema" in row else ""
        extra = "".join(f" {k}={v:.3g}" for k, v in row.items() if k not in _EPOCH_KEYS)
        print(f"epoch {row['epoch']:>3}/{epochs}  train_loss={row['train_loss']:.4f} "
              f"train_acc={row['train_acc']:.4f}  test_loss={row['test_loss']:.4f} "
              f"test_acc={row['test_acc']:.4f}{ema}  lr={row['lr']:.2e}  {row['time_s']:.1f}s"
              f"{' ' + extra if extra else ''}", flush=True)

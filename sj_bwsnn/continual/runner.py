"""The task-sequence runner behind ``sj-bwsnn train RECIPE`` when the recipe has a
``continual.protocol``.

:class:`ContinualTrainer` is a :class:`~sj_bwsnn.engine.trainer.Trainer` that trains a list of
stages (:func:`plan`): each task in turn (``epochs_per_task`` epochs), optionally followed by a
replay of the memory of every task so far (``continual.replay`` samples per class,
``replay_epochs`` at ``replay_lr``, no projection: HLOP-SNN spiking_train_pmnist.py:393-466), or
all tasks at once for ``protect: joint``. Every stage is an ordinary ``fit`` -- the chosen
training method, AMP, clipping, checkpoints every ``train.checkpoint_every`` steps, Ctrl-C -- on the
stage's data, with a new optimizer and schedule per stage (as the group's scripts, :249-272). After
a task's last stage every task seen so far is evaluated: one row of the accuracy matrix
(:mod:`.metrics`), printed, drawn to ``OUT/continual.png``, kept in ``OUT/metrics.json``::

    {"continual": {"acc_matrix", "acc", "bwt", "protocol", "protect", "tasks", "complete"},
     "epochs": [{"task", "stage", "epoch", "train_loss", ..., "test_acc"}, ...]}

(an epoch row's ``test_acc`` is on the task being learnt; ``joint``: the last task).

From the second task on, with ``continual.freeze_1d`` (default, as the group's scripts:
spiking_train_pmnist.py:249-256, 277-278), only weights of two or more dimensions train and every
BatchNorm stays in eval mode (its statistics and affine parameters frozen), neuron thresholds too.

Multi-head (``protocol: split``): the model has ``tasks * classes_per_task`` outputs; a sample is
scored on its own task's block (its label says which), and other tasks' logits are set to -1e4 for
the accuracy counts, so an epoch row's ``train_acc`` / ``test_acc`` are task-incremental.

The protect method (:mod:`.protect`) acts through :class:`~sj_bwsnn.engine.precision.Precision`'s
``grad_transforms`` and forward hooks; the trainer itself has no continual special case. The
checkpoint adds ``continual: {stage, acc_matrix, protect}`` to the trainer's state, so ``--resume``
continues mid-task exactly (a stage's epoch and batch position, its optimizer and RNG streams).

Not supported (refused with one line): torchrun, distillation, Mixup/CutMix, EMA, event frames.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from spikingjelly.activation_based.base import MemoryModule
from torch import nn
from torch.utils.data import DataLoader

from ..data import make_loaders
from ..data.continual import TaskSequence, task_sequence
from ..engine import distributed
from ..engine.checkpoint import atomic_write_bytes, save_checkpoint
from ..engine.methods import input_layers
from ..engine.trainer import Trainer
from ..errors import UserError
from .metrics import format_matrix, plot_heatmap, summarize
from .protect import Stage, build_protect

MASKED = -1e4  # the logit of another task's head


def plan(cfg, joint: bool) -> list[Stage]:
    """The stages of a run: ``task`` 0..n-1 (each followed by ``replay`` from task 1 on when
    ``cfg.replay``), or one ``joint`` stage."""
    if joint:
        return [Stage("joint", cfg.tasks - 1)]
    stages = []
    for t in range(cfg.tasks):
        stages.append(Stage("task", t))
        if cfg.replay and t >= 1:
            stages.append(Stage("replay", t))
    return stages


class _BatchEnd(MemoryModule):
    """Calls ``callback`` whenever the network's state is reset (after each batch)."""

    def __init__(self, callback):
        super().__init__()
        self._callback = callback

    def reset(self) -> None:
        super().reset()
        self._callback()


class TaskNet(nn.Module):
    """``model`` seen through the heads a stage may use: logits outside ``mask`` are set to
    :data:`MASKED` (no mask: unchanged). Passes ``T``, ``forward_seq`` and ``input_layers``
    through, so every training method treats it as the model."""

    def __init__(self, model: nn.Module, mask: torch.Tensor | None = None, on_reset=None):
        super().__init__()
        self.model = model
        self.mask = mask
        self.batch_end = _BatchEnd(on_reset) if on_reset is not None else None

    @property
    def T(self) -> int:
        return self.model.T

    def input_layers(self) -> list[nn.Module]:
        return input_layers(self.model)

    def _masked(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.mask is None else logits.masked_fill(~self.mask, MASKED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._masked(self.model(x))

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:
        return self._masked(self.model.forward_seq(x))


class HeadObjective:
    """The objective on each sample's own head: label ``y = t*k + c`` scores logits
    ``[t*k, (t+1)*k)`` against class ``c`` (``protocol: split``)."""

    def __init__(self, objective, k: int):
        self.objective, self.k = objective, k

    def __call__(self, logits: torch.Tensor, y: torch.Tensor, x=None):
        n, k = logits.shape[0], self.k
        own = logits.reshape(n, -1, k)[torch.arange(n, device=logits.device), y // k]
        return self.objective(own, y % k, x)


def _stay_eval(self, mode: bool = True):
    return self


def freeze_1d(model: nn.Module) -> None:
    """Only >= 2-D weights keep training; BatchNorm layers stay in eval mode (module docstring)."""
    for p in model.parameters():
        if p.ndim <= 1:
            p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            m.train = _stay_eval.__get__(m)  # net.train() leaves it in eval mode


def _refuse_unsupported(recipe) -> None:
    r = recipe
    problems = [
        (distributed.world()[1] > 1, "continual runs are single-process; run without torchrun"),
        (r.teacher.checkpoint is not None, "teacher.checkpoint: distillation is not supported in "
         "continual runs"),
        (r.data.mixup > 0 or r.data.cutmix > 0, "data.mixup / data.cutmix must be 0 in continual "
         "runs (mixed labels of different tasks)"),
        (r.train.ema_decay is not None, "train.ema_decay must be null in continual runs"),
    ]
    for bad, why in problems:
        if bad:
            raise UserError(why)


class ContinualTrainer(Trainer):
    """Trains the task sequence of ``recipe.continual`` (module docstring); :meth:`run` does it.

    Overrides of the trainer: ``build_data`` (the first stage's data), ``state`` / ``load_state``
    (the continual fields), ``evaluate`` (defaults to the current task's head), ``_epoch_row``,
    ``_save`` and ``_print`` (task-tagged rows, ``metrics.json`` as above, no ``best.pt``).
    """

    def __init__(self, recipe, out: Path | None = None):
        _refuse_unsupported(recipe)
        self.base_recipe = recipe
        self.cont = recipe.continual
        self.sequence: TaskSequence = task_sequence(recipe)
        self.protect = build_protect(recipe)
        self.stages = plan(self.cont, self.protect.joint)
        super().__init__(self._stage_recipe(self.stages[0]), out)
        self.stage, self._entered = 0, None
        self.acc_matrix: list[list[float]] = []
        self._monitor = None
        if self.cont.protocol == "split":
            self.objective = HeadObjective(self.objective, self.sequence.classes_per_task)
        self.protect.attach(self)
        self.precision.grad_transforms.append(self.protect.grad_transform)

    # -- stages ------------------------------------------------------------------------------------

    def _stage_recipe(self, stage: Stage):
        """The recipe a stage trains with: its epochs and learning rate; no curves / TensorBoard
        per stage (the run draws continual.png)."""
        r, c = self.base_recipe, self.cont
        replay = stage.kind == "replay"
        epochs = c.replay_epochs if replay else c.epochs_per_task
        lr = (c.replay_lr or r.optim.lr) if replay else r.optim.lr
        return replace(r, train=replace(r.train, epochs=epochs, plot=False, tensorboard=False),
                       optim=replace(r.optim, lr=lr))

    def build_data(self):
        train_loader, test_loader = self._stage_loaders(0)
        return train_loader, test_loader, self.sequence.info

    def _stage_loaders(self, s: int):
        stage, seq = self.stages[s], self.sequence
        if stage.kind == "joint":
            train = seq.joint_train_set()
        elif stage.kind == "replay":
            train = seq.memory_set(range(stage.task + 1), self.cont.replay)
        else:
            train = seq.train_set(stage.task)
        seed = self.base_recipe.seed + 1009 * s  # each stage its own (seeded) order
        return make_loaders(train, seq.test_set(stage.task), self.base_recipe.data, seed)

    def _mask(self, tasks) -> torch.Tensor | None:
        if self.cont.protocol != "split":
            return None
        mask = torch.zeros(self.sequence.outputs, dtype=torch.bool, device=self.device)
        for t in tasks:
            mask[self.sequence.head(t)] = True
        return mask

    def enter_stage(self, s: int) -> None:
        """Set up stage ``s``: its data, frozen parameters, heads, optimizer and schedule."""
        stage = self.stages[s]
        self.recipe = self._stage_recipe(stage)
        if self.cont.freeze_1d and (stage.kind == "replay" or (stage.kind == "task"
                                                               and stage.task > 0)):
            freeze_1d(self.model)
        heads = {"task": [stage.task], "replay": range(stage.task + 1),
                 "joint": range(self.sequence.tasks)}[stage.kind]
        self.net = TaskNet(self.model, self._mask(heads), self.protect.batch_reset)
        self._monitor = TaskNet(self.model, self._mask([stage.task]))
        self.train_loader, self.test_loader = self._stage_loaders(s)
        self._epoch_loader_state = self.train_loader.generator.get_state()
        self.epoch, self.batch_in_epoch, self._partial, self.best_acc = 0, 0, (0.0, 0, 0), -1.0
        self._build_optim()
        self.protect.begin_stage(stage)
        self.stage, self._entered = s, s

    def run(self) -> dict:
        """Train every remaining stage; returns :func:`~.metrics.summarize` of the matrix."""
        n = len(self.stages)
        if self.stage >= n:
            if self.is_main:
                print(f"nothing to do: {self.out / 'last.pt'} already finished all "
                      f"{self.cont.tasks} tasks")
            return self.summary()
        if self._entered != self.stage:
            self.enter_stage(self.stage)
        while self.stage < n:
            if self.epoch < self.recipe.train.epochs:
                self.fit()
            self._finish_stage()
        return self.summary()

    def _finish_stage(self) -> None:
        s, n = self.stage, len(self.stages)
        stage = self.stages[s]
        self.protect.end_stage(stage)
        if s + 1 == n or self.stages[s + 1].task != stage.task:
            tasks = range(self.sequence.tasks) if stage.kind == "joint" else range(stage.task + 1)
            self.acc_matrix.append([self.task_accuracy(j) for j in tasks])
            if self.is_main:
                print(format_matrix(self.summary(), joint=self.protect.joint), flush=True)
        if s + 1 < n:
            self.enter_stage(s + 1)
        else:
            self.stage = n
        if self.is_main and self.out is not None:
            save_checkpoint(self.out / "last.pt", self.state())
            self._write_metrics()
            if self.base_recipe.train.plot:
                plot_heatmap(self.summary(), self.out / "continual.png",
                             f"{self.cont.protocol}, {self.protect.name}", self.protect.joint)

    @torch.no_grad()
    def task_accuracy(self, task: int) -> float:
        """Test accuracy on ``task`` (its own head under ``split``)."""
        keep = self.test_loader
        d = self.base_recipe.data
        self.test_loader = DataLoader(self.sequence.test_set(task),
                                      batch_size=d.test_batch_size or d.batch_size,
                                      num_workers=d.num_workers)
        try:
            return super().evaluate(TaskNet(self.model, self._mask([task])))["test_acc"]
        finally:
            self.test_loader = keep

    def summary(self) -> dict:
        return summarize(self.acc_matrix)

    # -- trainer overrides -------------------------------------------------------------------------

    def evaluate(self, model: nn.Module | None = None) -> dict:
        return super().evaluate(model if model is not None else self._monitor)

    def _epoch_row(self) -> dict:
        stage = self.stages[self.stage]
        return {"task": stage.task + 1, "stage": stage.kind, **super()._epoch_row()}

    def _print(self, row: dict, epochs: int) -> None:
        print(f"task {row['task']:>2}/{self.cont.tasks} {row['stage']:<6} ", end="")
        Trainer._print({k: v for k, v in row.items() if k not in ("task", "stage")}, epochs)

    def _save(self, improved: bool, rng_ranks=None) -> None:
        save_checkpoint(self.out / "last.pt", self.state(rng_ranks))
        self._write_metrics()

    def _write_metrics(self) -> None:
        doc = {"continual": {**self.summary(), "protocol": self.cont.protocol,
                             "protect": self.protect.name, "tasks": self.cont.tasks,
                             "complete": self.stage >= len(self.stages)},
               "epochs": self.metrics}
        data = (json.dumps(doc, indent=2) + "\n").encode()
        atomic_write_bytes(self.out / "metrics.json", lambda f: f.write(data))

    def state(self, rng_ranks=None) -> dict:
        st = super().state(rng_ranks)
        st["continual"] = {"stage": self.stage, "acc_matrix": self.acc_matrix,
                           "protect": self.protect.state_dict()}
        return st

    def load_state(self, ckpt: dict, path: Path) -> None:
        cont = ckpt.get("continual")
        if not isinstance(cont, dict):
            raise UserError(f"--resume: {path} is the checkpoint of an ordinary run, not of a "
                            f"continual one; resume it without the continual section")
        s = int(cont["stage"])
        self.enter_stage(min(s, len(self.stages) - 1))
        super().load_state(ckpt, path)
        self.protect.load_state_dict(cont["protect"])
        self.acc_matrix = [list(r) for r in cont["acc_matrix"]]
        self.stage = s

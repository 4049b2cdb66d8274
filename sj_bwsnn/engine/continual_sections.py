"""The ``continual:`` recipe section (a task sequence, :mod:`sj_bwsnn.continual`) and its checks;
see :mod:`sj_bwsnn.engine.recipe` for the schema. Read only by the continual runner and HLOP."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class HLOPConfig:
    """HLOP's lateral subspace neurons (``continual.protect: hlop``; :mod:`sj_bwsnn.continual.hlop`).
    Layers are the model's conv / linear layers in module order (the task heads excepted under
    ``protocol: split``)."""

    # lateral neurons added per task: one entry per task (the last repeats); an entry is a list
    # with one count per protected layer, or one count for all of them
    neurons: list = field(default_factory=lambda: [20])
    lr: list = field(default_factory=lambda: [0.01])  # Hebbian rate, one per layer or one for all
    iterations: int = 5  # Hebbian updates per batch on the same activity
    momentum: float = 0.9  # of the Hebbian update (0: none)
    clip: float = 10.0  # each Hebbian update clamped to [-clip, clip]
    lateral: str = "rate"  # rate | spiking (lateral outputs quantised to spike counts)
    spiking_scale: float = 20.0  # spiking: outputs clamped to [-scale, scale]
    spiking_timesteps: int = 1000  # spiking: time steps of the lateral neurons
    proj_type: str = "input"  # input: project each presynaptic activity/trace | weight: the gradient
    hebbian_input: str = "rate"  # rate: (weighted) firing rate per sample | steps: every time step
    start_epoch: int = 0  # epochs of each task before the Hebbian updates start


@dataclass
class ContinualConfig:
    """A sequence of tasks instead of one training run (:mod:`sj_bwsnn.continual`); off while
    ``protocol`` is null."""

    protocol: Optional[str] = None  # null: an ordinary run | permuted | split
    tasks: int = 10
    classes_per_task: Optional[int] = None  # split: null = classes // tasks
    epochs_per_task: int = 1
    protect: str = "hlop"  # hlop | none | joint (all tasks at once: the upper bound)
    task_seed: int = 0  # the permutations / class order depend on this, not on `seed`
    shuffle_classes: bool = False  # split: class order drawn with task_seed (false: 0, 1, 2...)
    image_size: Optional[int] = None  # resize images (bilinear) before permuting; null: as is
    freeze_1d: bool = True  # from task 2 on train only >= 2-D weights, BatchNorm in eval mode
    replay: int = 0  # samples kept per class of each task for replay after each task (0: off)
    replay_epochs: int = 1
    replay_lr: Optional[float] = None  # null: optim.lr
    hlop: HLOPConfig = field(default_factory=HLOPConfig)


def continual_checks(c: ContinualConfig) -> list:
    """``(ok, key, why)`` for :func:`sj_bwsnn.engine.recipe_checks.check_ranges`."""
    h = c.hlop
    counts = [n for entry in h.neurons for n in (entry if isinstance(entry, list) else [entry])]
    return [
        (c.protocol in (None, "permuted", "split"), "continual.protocol",
         "must be permuted, split or null (an ordinary run)"),
        (c.tasks >= 1, "continual.tasks", "must be >= 1"),
        (c.classes_per_task is None or c.classes_per_task >= 2, "continual.classes_per_task",
         "must be >= 2 or null"),
        (c.epochs_per_task >= 1, "continual.epochs_per_task", "must be >= 1"),
        (c.image_size is None or c.image_size >= 1, "continual.image_size", "must be >= 1"),
        (c.replay >= 0, "continual.replay", "must be >= 0 (samples per class; 0: off)"),
        (c.replay_epochs >= 1, "continual.replay_epochs", "must be >= 1"),
        (c.replay_lr is None or c.replay_lr > 0, "continual.replay_lr", "must be > 0 or null"),
        (len(h.neurons) >= 1 and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                     for n in counts), "continual.hlop.neurons",
         "must be a list of counts >= 0, one entry per task, each a count or a list of counts "
         "per layer (e.g. [[80, 200, 100], 70])"),
        (len(h.lr) >= 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                for v in h.lr), "continual.hlop.lr",
         "must be a list of rates > 0 (one for all layers or one per layer)"),
        (h.iterations >= 1, "continual.hlop.iterations", "must be >= 1"),
        (0.0 <= h.momentum < 1.0, "continual.hlop.momentum", "must lie in [0, 1)"),
        (h.clip > 0, "continual.hlop.clip", "must be > 0"),
        (h.lateral in ("rate", "spiking"), "continual.hlop.lateral", "must be rate or spiking"),
        (h.spiking_scale > 0, "continual.hlop.spiking_scale", "must be > 0"),
        (h.spiking_timesteps >= 1, "continual.hlop.spiking_timesteps", "must be >= 1"),
        (h.proj_type in ("input", "weight"), "continual.hlop.proj_type", "must be input or weight"),
        (h.hebbian_input in ("rate", "steps"), "continual.hlop.hebbian_input",
         "must be rate or steps"),
        (h.start_epoch >= 0, "continual.hlop.start_epoch", "must be >= 0"),
    ]

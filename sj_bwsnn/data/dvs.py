"""CIFAR10-DVS through SpikingJelly's ``CIFAR10DVS``: event frames, a per-class 9:1 split.

Events are integrated into ``T`` frames with ``split_by='number'`` (each frame holds the same
number of events), giving float32 ``[T, 2, 128, 128]`` event counts per sample; the DataLoader
stacks them to ``[N, T, 2, H, W]`` (the trainer moves time first). ``input_size`` resizes by
area averaging, which keeps the mean event count (e.g. 48, as in the group's SLTT/OTTT code).
``augment`` adds a random horizontal flip and a random shift of up to ``size // 8`` pixels (zero fill) to training samples.

The split is deterministic: within each class (files sorted by name) the first ``train_ratio``
of the samples train, the rest test, as ``split_to_train_test_set(random_split=False)`` does,
read from the folder listing instead of loading every sample.

Offline safety: SpikingJelly starts a download when ``root/events_np`` is missing and leaves an
``events_np.building`` marker behind when that fails, which blocks every later call. So the
expected folders are checked first and a missing set is one :class:`UserError` line.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from ..errors import UserError

NUM_CLASSES, IN_CHANS, SIZE = 10, 2, 128


class FrameTransform:
    """numpy ``[T, C, H, W]`` -> float tensor, resized to ``size``, optionally flipped/shifted."""

    def __init__(self, size: int, augment: bool):
        self.size, self.augment = size, augment

    def __call__(self, frames) -> torch.Tensor:
        x = torch.as_tensor(frames, dtype=torch.float32)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        if self.augment:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            k = max(self.size // 8, 0)
            if k:
                dy, dx = torch.randint(-k, k + 1, (2,)).tolist()
                x = F.pad(x, (k, k, k, k))[..., k + dy:k + dy + self.size, k + dx:k + dx + self.size]
        return x


def _check_layout(root: Path, T: int, download: bool) -> None:
    frames_dir = root / f"frames_number_{T}_split_by_number"
    for d in (root / "events_np", frames_dir):
        marker = d.with_name(d.name + ".building")
        if marker.exists():
            raise UserError(f"cifar10dvs: an earlier preparation stopped half-way ({marker} exists); "
                            f"delete {marker} and {d}, then retry")
    # SpikingJelly prepares (downloads) the raw set whenever events_np/ is missing, even next to
    # already integrated frames, so events_np/ is what must be there
    have_events = (root / "events_np").is_dir() and any((root / "events_np").iterdir())
    if not (have_events or download):
        raise UserError(f"cifar10dvs not found: expected {root}/events_np/<class>/*.npz (keys t, x, "
                        f"y, p; SpikingJelly's layout); set data.download=true to fetch and "
                        f"convert it")


def per_class_split(targets: list[int], train_ratio: float) -> tuple[list[int], list[int]]:
    """Indices ``(train, test)``: the first ``train_ratio`` of each class (in order) train."""
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    train, test = [], []
    for idx in by_class.values():
        n = int(round(len(idx) * train_ratio))
        n = min(max(n, 1), len(idx) - 1) if len(idx) > 1 else len(idx)
        train += idx[:n]
        test += idx[n:]
    return sorted(train), sorted(test)


def cifar10dvs_splits(cfg, T: int):
    """``(train, test, num_classes, size)``; samples are ``[T, 2, size, size]`` tensors."""
    if not cfg.root:
        raise UserError("data.root is required for cifar10dvs (the folder holding events_np/)")
    root = Path(cfg.root).expanduser()
    _check_layout(root, T, cfg.download)
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    size = cfg.input_size or SIZE

    def make(augment: bool):
        try:
            return CIFAR10DVS(str(root), data_type="frame", frames_number=T, split_by="number",
                              transform=FrameTransform(size, augment))
        except (OSError, RuntimeError, ValueError) as e:
            raise UserError(f"cifar10dvs: SpikingJelly could not prepare {root} ({e})") from None

    train_set = make(cfg.augment)
    test_set = make(False)
    train_idx, test_idx = per_class_split(train_set.targets, cfg.train_ratio)
    return Subset(train_set, train_idx), Subset(test_set, test_idx), NUM_CLASSES, size

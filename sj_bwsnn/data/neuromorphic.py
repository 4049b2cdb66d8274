"""N-MNIST and DVS128 Gesture through SpikingJelly's loaders: event frames at the recipe's T.

Both sets come with a train/test split. SpikingJelly's layout, which ``data.root`` must hold::

    ROOT/events_np/train/<class>/*.npz     (keys t, x, y, p; classes 0..9 / 0..10)
    ROOT/events_np/test/<class>/*.npz

SpikingJelly integrates the events of every sample into ``T`` frames with ``split_by='number'``
(each frame the same number of events; as OTTT's DVS128 Gesture code, train_dvsgesture.py:99)
and caches them in ``ROOT/frames_number_T_split_by_number/``; a sample is a float32
``[T, 2, H, W]`` tensor of event counts (H = W = 34 for N-MNIST, 128 for DVS128 Gesture).
``input_size`` resizes by area averaging (the mean event count is kept). ``augment`` shifts
training samples by up to ``size // 8`` pixels (zero fill); no flip, which would turn a left-hand
gesture into a right-hand one.

Offline safety, as for CIFAR10-DVS (:mod:`.dvs`): neither set can be downloaded by SpikingJelly
(licence), and when ``events_np/`` is missing SpikingJelly leaves an ``events_np.building``
marker behind before failing, which blocks every later call. So the folders are checked first:
a missing or half-built set is one :class:`UserError` line. ``events_np/`` may instead be built
from the original archives placed in ``ROOT/download/`` (their MD5 sums are checked here first,
since SpikingJelly deletes a file whose sum is wrong); that conversion runs offline.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError
from .dvs import FrameTransform, one_preprocess_thread, refuse_half_built

IN_CHANS = 2


@dataclass(frozen=True)
class EventSet:
    cls: str  # SpikingJelly class, "module:Name"
    num_classes: int
    size: int  # sensor side (H = W)
    source: str  # where the original archives come from


SETS = {
    "nmnist": EventSet("spikingjelly.datasets.n_mnist:NMNIST", 10, 34,
                       "https://www.garrickorchard.com/datasets/n-mnist"),
    "dvs128_gesture": EventSet("spikingjelly.datasets.dvs128_gesture:DVS128Gesture", 11, 128,
                               "https://research.ibm.com/interactive/dvsgesture/"),
}


def _sj_class(spec: EventSet):
    module, name = spec.cls.split(":")
    return getattr(importlib.import_module(module), name)


def _has_npz(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix == ".npz" for d in folder.iterdir() if d.is_dir()
                                   for p in d.iterdir())


def _archives_ok(name: str, cls, root: Path) -> list[str]:
    """The archives SpikingJelly converts from ``ROOT/download/``; raises if one is corrupt,
    returns the missing ones."""
    from torchvision.datasets.utils import check_integrity

    missing = []
    for file_name, _, md5 in cls.resource_url_md5():
        path = root / "download" / file_name
        if not path.exists():
            missing.append(file_name)
        elif not check_integrity(str(path), md5):
            raise UserError(f"{name}: {path} is incomplete or corrupt (MD5 mismatch); download it "
                            f"again")
    return missing


def check_layout(name: str, root: Path, T: int) -> None:
    """One :class:`UserError` line unless SpikingJelly can load ``name`` from ``root`` offline."""
    spec, cls = SETS[name], _sj_class(SETS[name])
    refuse_half_built(name, root, T)
    events = root / "events_np"
    if events.is_dir():
        lacking = [s for s in ("train", "test") if not _has_npz(events / s)]
        if lacking:
            raise UserError(f"{name}: {events} has no {' or '.join(lacking)}/<class>/*.npz; expected "
                            f"SpikingJelly's layout events_np/{{train,test}}/<class>/*.npz")
        return
    missing = _archives_ok(name, cls, root)
    if missing:
        raise UserError(f"{name} not found: expected {root}/events_np/{{train,test}}/<class>/*.npz "
                        f"(keys t, x, y, p; SpikingJelly's layout), or the original "
                        f"{', '.join(missing)} from {spec.source} in {root}/download/ to convert "
                        f"(SpikingJelly cannot download {name})")


class ShiftTransform(FrameTransform):
    """:class:`~.dvs.FrameTransform` (resize) plus, with ``augment``, a random shift of up to
    ``size // 8`` pixels with zero fill; never a flip."""

    def __init__(self, size: int, augment: bool):
        super().__init__(size, augment=False)
        self.shift = augment

    def __call__(self, frames) -> torch.Tensor:
        x = super().__call__(frames)
        k = self.size // 8
        if self.shift and k:
            dy, dx = torch.randint(-k, k + 1, (2,)).tolist()
            x = F.pad(x, (k, k, k, k))[..., k + dy:k + dy + self.size, k + dx:k + dx + self.size]
        return x


def event_splits(cfg, T: int):
    """``(train, test, num_classes, size)`` for ``cfg.name`` in :data:`SETS`; samples are
    ``[T, 2, size, size]`` tensors."""
    name, spec = cfg.name, SETS[cfg.name]
    if not cfg.root:
        raise UserError(f"data.root is required for {name} (the folder holding events_np/)")
    root = Path(cfg.root).expanduser()
    check_layout(name, root, T)
    cls = _sj_class(spec)
    size = cfg.input_size or spec.size

    def make(train: bool, augment: bool):
        try:
            with one_preprocess_thread():
                return cls(str(root), train=train, data_type="frame", frames_number=T,
                           split_by="number", transform=ShiftTransform(size, augment))
        except (OSError, RuntimeError, ValueError, NotImplementedError) as e:
            raise UserError(f"{name}: SpikingJelly could not prepare {root} ({e})") from None

    return make(True, cfg.augment), make(False, False), spec.num_classes, size

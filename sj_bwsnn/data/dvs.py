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
expected folders are checked first and a missing set is one :class:`UserError` line. When
SpikingJelly's preparation fails anyway (e.g. an unreadable ``.npz`` among the events), the
folders it created in that call and their ``.building`` markers are removed, and the error names
the file; a frame file that cannot be read during training is named too.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
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


def refuse_half_built(name: str, root: Path, T: int) -> None:
    """One line when an earlier conversion of ``root``'s events or frames stopped half-way (its
    ``.building`` marker is still there), so a partial folder is never read as a whole one."""
    for d in (root / "events_np", root / f"frames_number_{T}_split_by_number"):
        marker = d.with_name(d.name + ".building")
        if marker.exists():
            raise UserError(f"{name}: an earlier preparation stopped half-way ({marker} exists); "
                            f"delete {marker} and {d}, then retry")


def _check_layout(root: Path, T: int, download: bool) -> None:
    refuse_half_built("cifar10dvs", root, T)
    # SpikingJelly prepares (downloads) the raw set whenever events_np/ is missing, even next to
    # already integrated frames, so events_np/ is what must be there
    have_events = (root / "events_np").is_dir() and any((root / "events_np").iterdir())
    if not (have_events or download):
        raise UserError(f"cifar10dvs not found: expected {root}/events_np/<class>/*.npz (keys t, x, "
                        f"y, p; SpikingJelly's layout); set data.download=true to fetch and "
                        f"convert it")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0]}" if text else e.__class__.__name__


def _unreadable(path: Path) -> str | None:
    """Why the event file ``path`` cannot be integrated (``None``: it reads, with t, x, y, p)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":  # np.load would try it as a pickle and blame that
            return "an empty file" if not head else "not a zip (.npz) archive"
        with np.load(path) as d:
            missing = [k for k in "txyp" if k not in d.files]
            if missing:
                return f"no {'/'.join(missing)} arrays; it holds {'/'.join(d.files) or 'none'}"
            for k in "txyp":
                d[k]  # reads the member: a damaged archive fails here (bad CRC, truncation)
    except Exception as e:  # noqa: BLE001 - any failure to read is the answer
        return _first_line(e)
    return None


def _file_being_read(exc: BaseException, folder: Path) -> Path | None:
    """The ``.npz`` under ``folder`` that SpikingJelly was reading when ``exc`` was raised: a
    local variable of a frame of its traceback (the worker thread's frames travel with it)."""
    tb = exc.__traceback__
    while tb is not None:
        for v in tb.tb_frame.f_locals.values():
            if isinstance(v, (str, Path)) and str(v).endswith(".npz") and \
                    Path(v).resolve().is_relative_to(folder.resolve()):
                return Path(v)
        tb = tb.tb_next
    return None


@contextmanager
def one_preprocess_thread():
    """SpikingJelly converts event files in a thread pool, and every thread parses ``.npy`` headers
    with ``ast.literal_eval``, whose AST constructor is not thread-safe in CPython 3.11 (our CI on
    3.11.7 raised ``SystemError: AST constructor recursion depth mismatch`` from it). The
    conversion runs once per data set and T, so within this block it runs in one thread: slower
    once, never a spurious failure."""
    from spikingjelly import configure

    old = configure.max_threads_number_for_datasets_preprocess
    configure.max_threads_number_for_datasets_preprocess = 1
    try:
        yield
    finally:
        configure.max_threads_number_for_datasets_preprocess = old


def _prepare(root: Path, T: int, build):
    """``build()`` (SpikingJelly preparing ``root``); if it fails, nothing it created in this call
    is left behind (half-built folders, ``.building`` markers) and an unreadable file is named."""
    created = [d for d in (root / "events_np", root / f"frames_number_{T}_split_by_number")
               if not d.exists()]
    try:
        with one_preprocess_thread():
            return build()
    except BaseException as e:
        for d in created:
            shutil.rmtree(d, ignore_errors=True)
            d.with_name(d.name + ".building").unlink(missing_ok=True)
        if not isinstance(e, Exception):
            raise
        bad = _file_being_read(e, root / "events_np")
        why = _unreadable(bad) if bad is not None else None  # None too when writing failed
        if why:
            raise UserError(f"cifar10dvs: cannot read {bad} ({why}); "
                            f"replace it with a good copy (an .npz with arrays t, x, y, p) or "
                            f"delete it, then retry") from None
        if isinstance(e, (OSError, RuntimeError, ValueError)):
            raise UserError(f"cifar10dvs: SpikingJelly could not prepare {root} ({_first_line(e)})"
                            ) from None
        raise


class _NamedLoader:
    """The data set's file loader; a file it cannot read is one :class:`UserError` naming it."""

    def __init__(self, load, frames_dir: Path):
        self.load, self.frames_dir = load, frames_dir

    def __call__(self, path):
        try:
            return self.load(path)
        except Exception as e:  # noqa: BLE001 - whatever the damage, name the file
            raise UserError(f"cifar10dvs: cannot read {path} ({_first_line(e)}); delete "
                            f"{self.frames_dir} to integrate the frames again from events_np/"
                            ) from None


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
        ds = _prepare(root, T, lambda: CIFAR10DVS(
            str(root), data_type="frame", frames_number=T, split_by="number",
            transform=FrameTransform(size, augment)))
        ds.loader = _NamedLoader(ds.loader, root / f"frames_number_{T}_split_by_number")
        return ds

    train_set = make(cfg.augment)
    test_set = make(False)
    train_idx, test_idx = per_class_split(train_set.targets, cfg.train_ratio)
    return Subset(train_set, train_idx), Subset(test_set, test_idx), NUM_CLASSES, size

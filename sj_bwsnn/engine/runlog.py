"""Run logging: progress bars, TensorBoard scalars and a PNG of the learning curves.

``metrics.json`` (one row per epoch) stays the record of a run; TensorBoard (``OUT/tb``) is
optional and silently off when the ``tensorboard`` package is missing; ``OUT/curves.png``
(matplotlib, Agg backend) is drawn from the metrics at the end of a run.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm


def progress(iterable, total: int, desc: str, enabled: bool):
    """A tqdm bar; ``enabled=False`` (rank != 0) hides it, and so does a non-TTY stream."""
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True,
                disable=None if enabled else True)


class TensorBoard:
    """``add(row, epoch)`` writes every numeric field of a metrics row as a scalar."""

    def __init__(self, folder: Path | None):
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.writer = SummaryWriter(str(folder))

    def add(self, row: dict, epoch: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                group = "loss" if "loss" in key else "acc" if "acc" in key else "misc"
                self.writer.add_scalar(f"{group}/{key}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_curves(metrics: list[dict], path: Path) -> None:
    """Loss (left) and accuracy (right) per epoch, train and test, written atomically."""
    try:
        import matplotlib
    except ImportError:  # optional: metrics.json remains the record
        print(f"matplotlib is not installed; {path} not drawn")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .checkpoint import atomic_write_bytes

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, ax in (("loss", ax_l), ("acc", ax_a)):
        for split in ("train", "test"):
            ax.plot(epochs, [m[f"{split}_{key}"] for m in metrics], marker=".", label=split)
        if f"test_{key}_ema" in metrics[0]:
            ax.plot(epochs, [m[f"test_{key}_ema"] for m in metrics], marker=".", label="test (EMA)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write_bytes(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)

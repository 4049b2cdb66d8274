"""Forgetting measured: the accuracy matrix, ACC, BWT, their printout and heatmap.

``acc_matrix[i][j]`` is the test accuracy on task ``j`` after training task ``i`` (a fraction);
row ``i`` lists the tasks seen so far, ``j <= i``. With ``n`` rows so far and ``L = n - 1`` the last::

    ACC = mean_j acc_matrix[L][j]                         (over the tasks seen)
    BWT = mean_{j < L} (acc_matrix[L][j] - acc_matrix[j][j])

as the group's scripts print them (pkuxmq/HLOP-SNN spiking_train_pmnist.py:477-478: final average
accuracy and ``mean((acc[-1] - diag(acc))[:-1])``). A run that trains all tasks at once
(``protect: joint``) has a single row over every task: its ACC is the mean of that row and it has
no BWT (``None``).
"""

from __future__ import annotations

from pathlib import Path


def summarize(acc_matrix: list[list[float | None]]) -> dict:
    """``{"acc_matrix", "acc", "bwt"}`` of the rows so far (module docstring); ``acc`` / ``bwt``
    are ``None`` while undefined (no row yet; BWT needs rows for at least two tasks)."""
    rows = [list(r) for r in acc_matrix]
    if not rows:
        return {"acc_matrix": rows, "acc": None, "bwt": None}
    last = [a for a in rows[-1] if a is not None]
    acc = sum(last) / len(last) if last else None
    L = len(rows) - 1
    diag_ok = all(j < len(rows[j]) and rows[j][j] is not None for j in range(L))
    square = L >= 1 and diag_ok and all(rows[L][j] is not None for j in range(L))
    bwt = sum(rows[L][j] - rows[j][j] for j in range(L)) / L if square else None
    return {"acc_matrix": rows, "acc": acc, "bwt": bwt}


def format_matrix(summary: dict, joint: bool = False) -> str:
    """The matrix in percent, one row per trained task, then ACC and BWT."""
    rows = summary["acc_matrix"]
    width = max((len(r) for r in rows), default=0)
    head = "          " + "".join(f"{'T' + str(j + 1):>7}" for j in range(width))
    lines = ["accuracy (%) on each task (columns) after training each task (rows):", head]
    for i, r in enumerate(rows):
        label = "all tasks" if joint else f"after T{i + 1}"
        cells = "".join(f"{'' if a is None else f'{100 * a:.1f}':>7}" for a in r)
        lines.append(f"{label:<10}{cells}")
    acc, bwt = summary["acc"], summary["bwt"]
    tail = f"ACC {100 * acc:.2f}" if acc is not None else "ACC -"
    tail += f"  BWT {100 * bwt:+.2f}" if bwt is not None else "  BWT -"
    lines.append(tail)
    return "\n".join(lines)


def plot_heatmap(summary: dict, path: Path, title: str = "", joint: bool = False) -> None:
    """``acc_matrix`` as a heatmap (percent in each cell), written atomically to ``path``."""
    try:
        import matplotlib
    except ImportError:  # optional: metrics.json remains the record
        print(f"matplotlib is not installed; {path} not drawn")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..engine.checkpoint import atomic_write_bytes

    rows = summary["acc_matrix"]
    n_cols = max((len(r) for r in rows), default=1)
    grid = np.full((max(len(rows), 1), n_cols), np.nan)
    for i, r in enumerate(rows):
        for j, a in enumerate(r):
            if a is not None:
                grid[i, j] = 100 * a
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n_cols, 0.9 + 0.45 * grid.shape[0]))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=100,
                      aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(n_cols):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if grid[i, j] < 60 else "black")
    ax.set_xticks(range(n_cols), [f"T{j + 1}" for j in range(n_cols)])
    ax.set_yticks(range(grid.shape[0]), ["all tasks"] if joint
                  else [f"after T{i + 1}" for i in range(grid.shape[0])])
    ax.set_xlabel("evaluated on task")
    acc, bwt = summary["acc"], summary["bwt"]
    caption = title + (f"  ACC {100 * acc:.1f}%" if acc is not None else "")
    caption += f"  BWT {100 * bwt:+.1f}" if bwt is not None else ""
    ax.set_title(caption.strip(), fontsize=9)
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    atomic_write_bytes(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)

"""A run's output folder: made before training (never over an earlier run), removed again when
the run never started, and the ``--resume`` / ``--resume auto`` decision (``sj-bwsnn train``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def prepare_out(out: Path, resume: bool) -> list[Path]:
    """Create OUT (or check it for --resume); refuse to overwrite an earlier run. Returns the
    folders it created, deepest first, for :func:`remove_if_empty`."""
    last = out / "last.pt"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the run")
    if resume:
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint at {last}; start without --resume "
                            f"(--resume auto starts a run that has none)")
        return []
    if last.exists():
        raise UserError(f"{out} already holds a run ({last}); pass --resume to continue it "
                        f"or choose another --out")
    created = [d for d in [out, *out.parents] if not d.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        remove_if_empty(created)
        raise UserError(f"output directory {out} is not writable ({e.strerror})") from None
    return created


def remove_if_empty(folders: list[Path]) -> None:
    """A run that never started leaves nothing behind: remove these folders (deepest first)
    while they are empty."""
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            return


def resume_decision(out: Path, resume) -> bool:
    """Whether this run resumes ``OUT/last.pt``: ``--resume`` always, ``--resume auto`` when the
    file exists (rank 0 looks; every rank takes its answer, so no rank resumes alone)."""
    if resume != "auto":
        return bool(resume)
    import torch.distributed as dist

    found = [(out / "last.pt").is_file()]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(found, src=0)
    return found[0]

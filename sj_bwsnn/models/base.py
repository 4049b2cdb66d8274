"""What every sj_bwsnn model shares: the time-averaged read-out and the timm entrypoint contract."""

from __future__ import annotations

import torch
from torch import nn


class SpikingClassifier(nn.Module):
    """A multi-step classifier: subclasses define ``forward_seq(x) -> [T, N, K]`` and
    ``get_classifier()``; ``forward`` returns the time-averaged logits ``mean_t`` of it, ``[N, K]``."""

    def forward_seq(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Time-averaged logits ``[N, num_classes]``."""
        return self.forward_seq(x).mean(0)


def entrypoint_kwargs(pretrained: bool, kwargs: dict) -> dict:
    """Check a timm entrypoint's ``pretrained`` flag and drop the keys timm adds for its own use."""
    if pretrained:
        raise ValueError("sj_bwsnn ships no pretrained weights; load a checkpoint instead")
    return {k: v for k, v in kwargs.items()
            if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}

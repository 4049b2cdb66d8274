"""The weight binarizer shared by every binary layer.

Forward, per output channel ``c`` (``scaling='channel'``)::

    w_b[c] = alpha[c] * sign(w[c]),   sign(0) = +1,   alpha[c] = mean_k |w[c, k]|

``scaling='tensor'`` uses one ``alpha`` = mean |w| over the whole tensor; ``scaling='none'``
uses ``alpha = 1`` (pure +-1 weights).

Backward (straight-through estimator, clipped identity, as in Bi-Real Net / ReActNet)::

    dL/dw = dL/dw_b * 1{|w| <= 1}                      (sign path)
          + sign(w) * sum_k(dL/dw_b * sign(w)) / n      (alpha path, only if not detach_alpha)

The sign path passes the gradient unscaled by ``alpha``, as ReActNet's ``HardBinaryConv`` does, so
the latent-weight update does not shrink with the weight magnitude. Latent weights stay real-valued;
only the forward sees ``w_b``.
"""

from __future__ import annotations

import torch

SCALINGS = ("channel", "tensor", "none")


def _reduce_dims(w: torch.Tensor, scaling: str) -> tuple[int, ...] | None:
    if scaling == "channel":
        return tuple(range(1, w.dim()))
    if scaling == "tensor":
        return tuple(range(w.dim()))
    return None


def binary_sign(w: torch.Tensor) -> torch.Tensor:
    """``sign`` with ``sign(0) = +1`` (``torch.sign`` maps 0 to 0, which is not a binary value)."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


class _BinarizeWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, scaling: str, detach_alpha: bool) -> torch.Tensor:
        s = binary_sign(w)
        dims = _reduce_dims(w, scaling)
        if dims is None:
            alpha = None
            w_b = s
        else:
            alpha = w.abs().mean(dim=dims, keepdim=True)
            w_b = alpha * s
        ctx.save_for_backward(w)
        ctx.scaling, ctx.detach_alpha = scaling, detach_alpha
        return w_b

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (w,) = ctx.saved_tensors
        grad_w = grad * (w.abs() <= 1).to(grad.dtype)
        dims = _reduce_dims(w, ctx.scaling)
        if dims is not None and not ctx.detach_alpha:
            s = binary_sign(w)
            grad_w = grad_w + s * (grad * s).mean(dim=dims, keepdim=True)  # d alpha / d w = s / n
        return grad_w, None, None


def binarize_weight(w: torch.Tensor, scaling: str = "channel", detach_alpha: bool = True) -> torch.Tensor:
    """Binarize a latent weight tensor (see the module docstring for the equations).

    ``w`` has the output channel first (``[C_out, ...]``), as conv and linear weights do.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    return _BinarizeWeight.apply(w, scaling, detach_alpha)


class WeightBinarizer(torch.nn.Module):
    """Module form of :func:`binarize_weight`, held by every binary layer.

    :param scaling: ``'channel'`` (per output channel mean |w|), ``'tensor'`` or ``'none'``.
    :param detach_alpha: if True (default) no gradient flows through ``alpha``.
    """

    def __init__(self, scaling: str = "channel", detach_alpha: bool = True):
        super().__init__()
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.scaling = scaling
        self.detach_alpha = detach_alpha

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # scaling was checked in __init__
        return _BinarizeWeight.apply(w, self.scaling, self.detach_alpha)

    def extra_repr(self) -> str:
        return f"scaling={self.scaling}, detach_alpha={self.detach_alpha}"

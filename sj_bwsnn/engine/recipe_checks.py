"""The range and combination checks of a recipe (:func:`check_ranges`), run by
:func:`sj_bwsnn.engine.recipe.recipe_from_dict` after every key has its type."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from ..layers.binarize import SCALINGS
from ..neuron.nodes import BACKENDS
from .compile import MODES as COMPILE_MODES
from .continual_sections import continual_checks
from .method_sections import method_checks

if TYPE_CHECKING:
    from .recipe import Recipe

# The checks that building the network needs (``recipe_from_dict(..., network_only=True)``): the
# analysis and export commands rebuild a trained model and skip the training-only rules (method /
# neuron pairings, loss placement, optimiser ...), which may have changed since it was trained.
NETWORK_CHECKS = frozenset({"T", "model.scaling", "neuron.tau", "neuron.v_threshold",
                            "neuron.alpha", "neuron.backend", "data.input_size"})


def check_ranges(r: Recipe, network_only: bool = False) -> None:
    """One :class:`~sj_bwsnn.errors.UserError` line for the first key of ``r`` out of its range
    or in a combination that cannot run; ``network_only``: only :data:`NETWORK_CHECKS`."""
    checks = [
        (r.T >= 1, "T", "must be >= 1"),
        (r.data.batch_size >= 1, "data.batch_size", "must be >= 1"),
        (r.data.test_batch_size is None or r.data.test_batch_size >= 1, "data.test_batch_size",
         "must be >= 1"),
        (r.data.num_workers >= 0, "data.num_workers", "must be >= 0"),
        (0.0 < r.data.test_fraction < 1.0, "data.test_fraction", "must lie in (0, 1)"),
        (r.model.scaling in SCALINGS, "model.scaling", f"must be {', '.join(SCALINGS)}"),
        (r.neuron.tau > 1.0 or r.neuron.type != "lif", "neuron.tau",
         "must be > 1 (SpikingJelly's LIF needs tau > 1)"),
        (r.neuron.tau > 0.0, "neuron.tau", "must be > 0"),
        (r.neuron.v_threshold > 0, "neuron.v_threshold", "must be > 0"),
        (r.neuron.alpha > 0, "neuron.alpha", "must be > 0"),
        (r.neuron.backend in BACKENDS, "neuron.backend", f"must be {', '.join(BACKENDS)}"),
        (r.optim.lr > 0, "optim.lr", "must be > 0"),
        (r.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0"),
        (r.optim.binary_weight_decay >= 0, "optim.binary_weight_decay", "must be >= 0"),
        (r.optim.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0"),
        (r.optim.decay_milestones is None or (
            all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                for v in r.optim.decay_milestones)), "optim.decay_milestones",
         "must be a list of epochs (integers >= 1) or null"),
        (0 < r.optim.decay_rate <= 1, "optim.decay_rate", "must lie in (0, 1]"),
        (r.train.epochs >= 1, "train.epochs", "must be >= 1"),
        (0.0 <= r.train.label_smoothing < 1.0, "train.label_smoothing", "must lie in [0, 1)"),
        (r.train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0 (0: epoch ends only)"),
        (r.train.k >= 1, "train.k", "must be >= 1"),
        (r.train.method != "sltt_k" or r.train.k <= r.T, "train.k", "must be <= T for sltt_k"),
        (0.0 <= r.train.mse_lambda <= 1.0, "train.mse_lambda", "must lie in [0, 1]"),
        ((r.train.method == "dsr") == r.neuron.type.startswith("dsr_"), "train.method",
         "dsr and neuron.type dsr_if/dsr_lif go together (set both or neither)"),
        (r.train.method != "ottt" or r.neuron.v_reset is None, "neuron.v_reset",
         "must be null (soft reset) for train.method ottt: OTTT's traces assume a membrane that "
         "sums its inputs, which a hard reset breaks (neuron.preset: ottt is OTTT's neuron)"),
        (r.train.loss_on in (None, "mean", "per_step"), "train.loss_on",
         "must be mean, per_step or null (the method's own)"),
        (r.train.mse_target in ("one_hot", "ones"), "train.mse_target", "must be one_hot or ones"),
        (r.train.amp in ("off", "bf16", "fp16"), "train.amp", "must be off, bf16 or fp16"),
        (r.train.compile in COMPILE_MODES, "train.compile", f"must be {', '.join(COMPILE_MODES)}"),
        (r.train.clip_grad is None or r.train.clip_grad > 0, "train.clip_grad",
         "must be > 0 or null"),
        (r.train.ema_decay is None or 0.0 < r.train.ema_decay < 1.0, "train.ema_decay",
         "must lie in (0, 1) or be null"),
        (r.data.pad >= 0, "data.pad", "must be >= 0"),
        (r.data.input_size is None or r.data.input_size >= 1, "data.input_size", "must be >= 1"),
        (r.data.scale is None or _pair(r.data.scale), "data.scale", "must be a list of 2 numbers"),
        (r.data.ratio is None or _pair(r.data.ratio), "data.ratio", "must be a list of 2 numbers"),
        (0.0 <= r.data.hflip <= 1.0, "data.hflip", "must lie in [0, 1]"),
        (0.0 <= r.data.re_prob <= 1.0, "data.re_prob", "must lie in [0, 1]"),
        (r.data.mixup >= 0 and r.data.cutmix >= 0, "data.mixup/cutmix", "must be >= 0"),
        (0.0 <= r.data.mixup_prob <= 1.0, "data.mixup_prob", "must lie in [0, 1]"),
        (0.0 < r.data.train_ratio < 1.0, "data.train_ratio", "must lie in (0, 1)"),
        (r.data.max_train is None or r.data.max_train >= 1, "data.max_train", "must be >= 1"),
        (r.data.max_test is None or r.data.max_test >= 1, "data.max_test", "must be >= 1"),
        (r.teacher.tau > 0, "teacher.tau", "must be > 0"),
        (0.0 <= r.teacher.weight <= 1.0, "teacher.weight", "must lie in [0, 1]"),
        (r.teacher.T is None or r.teacher.T >= 1, "teacher.T", "must be >= 1"),
        *method_checks(r),
        *continual_checks(r.continual),
    ]
    for ok, key, why in checks:
        if not ok and (key in NETWORK_CHECKS or not network_only):
            raise UserError(f"recipe key '{key}' {why}")


def _pair(v) -> bool:
    return (isinstance(v, list) and len(v) == 2
            and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v))

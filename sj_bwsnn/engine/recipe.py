"""The recipe schema: one YAML file names everything a run needs.

A recipe is a mapping with the top-level keys of :class:`Recipe` (``T``, ``seed``,
``description``) and the sections ``data``, ``model``, ``neuron``, ``optim``, ``train``, ``teacher``,
``ide``, ``spide``, ``opzo``, ``continual``; every key
has a default, so a recipe only states what differs. ``--set key.sub=value`` overrides any key
(the value is parsed as YAML: ``--set T=2``, ``--set neuron.v_reset=null``).

Validation turns every mistake into one :class:`~sj_bwsnn.errors.UserError` line naming the key:
unknown keys (with the closest valid key suggested), wrong types, out-of-range values, and YAML
syntax errors (with the line number).

Extending the schema (new data sets, methods, distillation...) means adding a field to a section
dataclass below, with a type, a default and, where needed, a check in ``_check_ranges``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import UserError, closest
from ..neuron.registry import resolve_preset
from .continual_sections import ContinualConfig
from .method_sections import IDEConfig, OPZOConfig, SPIDEConfig
from .recipe_checks import check_ranges


@dataclass
class DataConfig:
    name: str = "digits"  # digits | mnist | fashion_mnist | cifar10 | cifar100 | imagenet | cifar10dvs | nmnist | dvs128_gesture
    root: Optional[str] = None  # data-set folder; digits needs none (fashion_mnist: Debian's)
    download: bool = False  # mnist, fashion_mnist, cifar10/100, cifar10dvs: fetch a missing data set (never otherwise)
    batch_size: int = 64  # per process (per GPU under torchrun)
    test_batch_size: Optional[int] = None  # default: batch_size
    num_workers: int = 0
    pin_memory: Optional[bool] = None  # null: pin when CUDA is available
    test_fraction: float = 0.25  # digits: fraction held out for test (stratified)
    split_seed: int = 0  # digits: the train/test split is fixed by this seed, not by `seed`
    augment: bool = False  # digits: random +-1 pixel shifts; cifar10dvs: random flip + shift;
    # nmnist, dvs128_gesture: random shift (no flip); mnist, fashion_mnist: timm create_transform
    # from the pad ... re_prob keys below (training set)
    input_size: Optional[int] = None  # image side; null: the data set's own (32, 224, 128, 34, 28)
    # timm create_transform (cifar10/100, imagenet training; mnist, fashion_mnist with augment)
    pad: int = 0  # zero padding before the crop (cifar: 4 with scale/ratio 0.64/1 = RandomCrop)
    scale: Optional[list] = None  # RandomResizedCrop area range; null: timm's (0.08, 1)
    ratio: Optional[list] = None  # RandomResizedCrop aspect range; null: timm's (3/4, 4/3)
    hflip: float = 0.5
    color_jitter: Optional[float] = None  # null: off
    auto_augment: Optional[str] = None  # e.g. rand-m9-mstd0.5-inc1 (RandAugment); null: off
    re_prob: float = 0.0  # random erasing probability
    crop_pct: Optional[float] = None  # test centre-crop fraction; null: timm's 0.875 (imagenet)
    # timm Mixup / CutMix (any data set); both 0: off
    mixup: float = 0.0  # mixup alpha
    cutmix: float = 0.0  # cutmix alpha
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    train_ratio: float = 0.9  # cifar10dvs: per-class train fraction (the usual 9:1 split)
    max_train: Optional[int] = None  # smoke runs: a fixed random subset of N training samples
    max_test: Optional[int] = None  # smoke runs: a fixed random subset of N test samples


@dataclass
class ModelConfig:
    name: str = "bw_resnet_tiny"  # any name registered with timm (ours: bw_resnet18, ...)
    binary: bool = True  # False: the full-precision twin
    scaling: str = "channel"  # channel | tensor | none
    detach_alpha: bool = True
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the model (e.g. stem)
    init_from: Optional[str] = None  # checkpoint whose weights initialise the model (two-stage KD)


@dataclass
class TeacherConfig:
    """Knowledge distillation; off while ``checkpoint`` is null (see engine/distill.py)."""

    checkpoint: Optional[str] = None  # an sj_bwsnn checkpoint or a plain state_dict file
    model: Optional[str] = None  # timm name, torchvision.NAME, or null: the checkpoint's recipe
    T: Optional[int] = None  # teacher time steps on static input; null: the checkpoint's (or T)
    kwargs: dict = field(default_factory=dict)  # extra model kwargs (timm/torchvision teachers)
    tau: float = 1.0  # softmax temperature
    weight: float = 1.0  # KD weight; 1 - weight goes to cross-entropy


@dataclass
class NeuronConfig:
    """The neuron of every spiking layer. ``preset`` (sltt | ottt | dsr_if | dsr_lif |
    spikingjelly, see :data:`sj_bwsnn.neuron.PRESETS`) fills the other keys with a source's values;
    keys the recipe states itself win. The run's ``recipe.yaml`` holds the resolved values. The
    defaults below are SpikingJelly 2.0's ``LIFNode`` defaults (= ``preset: spikingjelly``)."""

    preset: Optional[str] = None  # null: the keys below as given
    type: str = "lif"  # lif | if | dsr_if | dsr_lif
    tau: float = 2.0  # lif: SpikingJelly's tau (> 1); dsr_lif: DSR's time constant (> 0)
    decay_input: bool = True
    v_threshold: float = 1.0  # dsr_*: the initial (trainable) threshold
    v_reset: Optional[float] = 0.0  # null: soft reset (subtract the threshold)
    surrogate: str = "sigmoid"  # sigmoid | atan | piecewise_quadratic | ...
    alpha: float = 4.0  # surrogate sharpness
    detach_reset: bool = False
    backend: str = "auto"  # auto | cupy | torch


@dataclass
class OptimConfig:
    name: str = "adamw"  # any timm optimizer name (create_optimizer_v2)
    lr: float = 1e-3
    weight_decay: float = 0.0  # real-valued weights (biases and norms get none)
    binary_weight_decay: float = 0.0  # latent weights of binary layers (BNN practice: 0)
    momentum: float = 0.9
    sched: str = "cosine"  # any timm scheduler name (create_scheduler_v2); none: constant lr
    decay_milestones: Optional[list] = None  # multistep: epochs where lr *= decay_rate (null: timm's)
    decay_rate: float = 0.1  # multistep / step: the factor at each milestone
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 30
    label_smoothing: float = 0.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # training method (sj_bwsnn.engine.methods): bptt | sltt | sltt_fused | sltt_k | ottt | dsr
    # | ide | spide (feedback SNNs, model fsnn_*; options in the ide: / spide: sections) | opzo | dfa
    method: str = "bptt"
    k: int = 1  # sltt_k: time steps with backward per batch (1 <= k <= T)
    online_update: bool = False  # ottt, opzo, dfa: an optimizer step per time step (OTTT_O)
    # where the loss sits: mean (on mean_t logits) | per_step ((1/T) sum_t loss(logits[t]));
    # null: the method's own (bptt, dsr, ide, spide: mean; sltt, sltt_fused, sltt_k, ottt, opzo,
    # dfa: per_step)
    loss_on: Optional[str] = None
    mse_lambda: float = 0.0  # loss (1 - lambda) * CE + lambda * MSE(logits, target)
    mse_target: str = "one_hot"  # MSE target: one_hot (y) | ones (SLTT's CIFAR runs)
    amp: str = "off"  # off | bf16 | fp16 (fp16 uses a grad scaler)
    channels_last: bool = False
    clip_grad: Optional[float] = None  # max global grad norm; null: no clipping
    deterministic: bool = False  # torch.use_deterministic_algorithms, no cudnn autotuning
    ema_decay: Optional[float] = None  # timm ModelEmaV3 decay (e.g. 0.9998); null: no EMA
    tensorboard: bool = True  # OUT/tb scalars when tensorboard is installed
    plot: bool = True  # OUT/curves.png at the end of a run
    checkpoint_every: int = 0  # also save OUT/last.pt every N training steps (0: at epoch ends)
    # torch.compile the model (sj_bwsnn.engine.compile): off | default | reduce-overhead (CUDA
    # graphs) | max-autotune; a failure warns once and trains eagerly
    compile: str = "off"
    compile_fullgraph: bool = False  # a graph break is then a compile failure (eager + warning)


@dataclass
class Recipe:
    T: int = 4
    seed: int = 0
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    ide: IDEConfig = field(default_factory=IDEConfig)
    spide: SPIDEConfig = field(default_factory=SPIDEConfig)
    opzo: OPZOConfig = field(default_factory=OPZOConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# building and checking


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string",
            dict: "a mapping", list: "a list"}.get(tp, getattr(tp, "__name__", str(tp)))


# YAML 1.1 reads a bare ``off`` as false: accept it where "off" is a valid string value
_FALSE_MEANS = {"train.amp": "off", "train.compile": "off"}
_TRUE_MEANS = {"train.compile": "default"}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    if value is False and key in _FALSE_MEANS:
        value = _FALSE_MEANS[key]
    if value is True and key in _TRUE_MEANS:
        value = _TRUE_MEANS[key]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(key, value, inner)
    if tp is float and isinstance(value, str):
        # PyYAML (YAML 1.1) reads 1e-3 as a string; a number is what the user meant.
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
        list: isinstance(value, list),
    }.get(tp, True)
    if not ok:
        raise UserError(f"recipe key '{key}' must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"recipe section '{prefix.rstrip('.') or 'top level'}' must be a mapping, "
                        f"got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if cls is NeuronConfig and values.get("preset") is not None:
        preset = _coerce(f"{prefix}preset", values["preset"], str)
        values = {**resolve_preset(preset), **values}  # the recipe's own keys win
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            valid = [f"{prefix}{n}" for n in names]
            raise UserError(f"unknown recipe key '{full}'{closest(full, valid)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{full}.")
        else:
            kwargs[key] = _coerce(full, value, tp)
    return cls(**kwargs)


# keys a resumed run may change: extending a run, switching compilation on or off
RESUMABLE_CHANGES = ("train.epochs", "train.compile", "train.compile_fullgraph")


# Keys that name or describe a recipe's settings without being settings: two recipes that differ
# only here describe the same run (``neuron.preset`` is already resolved into the neuron keys).
LABEL_KEYS = frozenset({"description", "neuron.preset"})


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}`` (``kwargs`` mappings stay whole values)."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and k != "kwargs":
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def setting_differences(a: Recipe, b: Recipe) -> dict[str, tuple[Any, Any]]:
    """``{key: (value in a, value in b)}`` for every flattened key whose value differs, in
    ``a``'s key order, leaving out :data:`LABEL_KEYS`."""
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return {k: (v, fb.get(k)) for k, v in fa.items() if k not in LABEL_KEYS and v != fb.get(k)}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=0.1'`` -> ``(['optim', 'lr'], 0.1)``; the value is parsed as YAML."""
    if "=" not in text:
        raise UserError(f"--set expects key.sub=value, got {text!r}")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise UserError(f"--set: bad key {key!r} (expected e.g. optim.lr=0.1)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    """Set ``tree[path[0]][path[1]]... = value``, creating sections as needed."""
    node = tree
    for i, part in enumerate(path[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise UserError(f"--set {'.'.join(path)}: '{'.'.join(path[:i + 1])}' is not a section")
        node = nxt
    node[path[-1]] = value


def read_yaml(path: Path) -> dict:
    """Load a YAML mapping, turning syntax errors into one line with the line number."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"recipe not found: {path}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read recipe {path}: {e.__class__.__name__}") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"recipe {path}{where}: invalid YAML: {problem}") from None
    if tree is None:  # an empty file, or comments only; `{}` asks for the defaults on purpose
        raise UserError(f"recipe {path} is empty (no keys); start from a bundled recipe "
                        f"(`sj-bwsnn recipes` lists them), or write {{}} for all defaults")
    if not isinstance(tree, dict):
        raise UserError(f"recipe {path} must be a YAML mapping of keys, got {type(tree).__name__}")
    return tree


def recipe_from_dict(tree: dict, network_only: bool = False) -> Recipe:
    """Validate a plain mapping (e.g. one stored in a checkpoint) into a :class:`Recipe`;
    ``network_only``: check only what building the network needs (:data:`.recipe_checks.NETWORK_CHECKS`), to
    rebuild a trained model whatever training rules have changed since."""
    recipe = _build(Recipe, tree, "")
    check_ranges(recipe, network_only)
    return recipe


def _yield_to_new_preset(tree: dict, overrides: list[tuple[list[str], Any]]) -> None:
    """``--set neuron.preset=NAME`` naming another preset than the file's: drop from the file's
    ``neuron`` section the keys NAME defines, unless ``--set`` names them too, so NAME's values
    apply. A run's ``recipe.yaml`` holds its preset's resolved values, which would otherwise win
    over the new preset while the file records its name."""
    new = [v for p, v in overrides if p == ["neuron", "preset"]]
    section = tree.get("neuron")
    if not new or not isinstance(new[-1], str) or not isinstance(section, dict):
        return
    if section.get("preset") == new[-1]:
        return  # the same preset: nothing to give way to
    named = {p[1] for p, _ in overrides if len(p) == 2 and p[0] == "neuron"}
    for key in resolve_preset(new[-1]):
        if key not in named:
            section.pop(key, None)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override and validate a recipe file. ``--set neuron.preset=NAME`` replaces the
    file's values of the keys preset NAME defines (see :func:`_yield_to_new_preset`)."""
    tree = read_yaml(Path(path))
    parsed = [parse_override(text) for text in overrides]
    _yield_to_new_preset(tree, parsed)
    for key_path, value in parsed:
        apply_override(tree, key_path, value)
    return recipe_from_dict(tree)

"""NIR round trips, measured: our model vs the exported graph re-imported in SpikingJelly and snnTorch.

    python bench/nir_roundtrip.py --checkpoint runs/digits/last.pt [--out bench/results]

Three models (CPU):

* ``bw_resnet_tiny`` trained on digits (the checkpoint; ``sj-bwsnn train digits_bwsnn``), on the
  whole digits test set;
* an FC net ``Flatten -> BinaryLinear(64, 128) -> LIF -> BinaryLinear(128, 10) -> LIF`` (output
  spike counts over T=4 are the class scores), trained here for a few epochs on digits;
* ``bw_resnet18`` (CIFAR stem) with random weights and random BN statistics that make every layer
  fire, on 16 random 3x32x32 images.

Each is exported with ``threshold='sj'`` and ``'spec'`` and run through SpikingJelly's
``import_from_nir`` and snnTorch's ``import_from_nir`` (see :mod:`sj_bwsnn.deploy.nir_check`);
the record holds per-layer identical-spike fractions, identical predictions, the largest
time-averaged output difference, and how many of our spikes change when every threshold is raised
by one float32 ulp (membranes exactly at the threshold, where ``>=`` and ``>`` disagree).
A fourth model, ``fc_pm1`` (+-1 weights, no bias, binary input), puts membranes exactly on the
threshold on purpose.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import stamped, write_record  # noqa: E402

import sj_bwsnn  # noqa: E402
from sj_bwsnn.deploy import nir_check  # noqa: E402
from sj_bwsnn.deploy.nir import DT, to_nir  # noqa: E402


def _batches(model, xs, fn):
    """Concatenate ``fn`` over input batches: (out [T, N, K], spikes) as one run."""
    outs, spikes = [], {}
    for x in xs:
        out, sp = fn(x)
        outs.append(out)
        for k, v in sp.items():
            spikes.setdefault(k, []).append(v)
    return torch.cat(outs, 1), {k: torch.cat(v, 1) for k, v in spikes.items()}


def at_threshold(model: nn.Module, xs: list[torch.Tensor], ours) -> int:
    """How many of our spikes change when every threshold is raised by one float32 ulp, in our
    own model: spikes fired by a membrane exactly at the threshold, plus what they change
    downstream. Zero means the ``>=`` / ``>`` conventions cannot disagree on these inputs."""
    nudged = copy.deepcopy(model)
    for m in nudged.modules():
        if isinstance(m, BaseNode):
            m.v_threshold = float(np.nextafter(np.float32(m.v_threshold), np.float32(np.inf)))
    theirs = _batches(nudged, xs, lambda x: nir_check.run_ours(nudged, x))
    return int(sum((ours[1][k] != theirs[1][k]).sum().item() for k in ours[1]))


def measure(name: str, model: nn.Module, xs: list[torch.Tensor], labels=None) -> list[dict]:
    ours = _batches(model, xs, lambda x: nir_check.run_ours(model, x))
    exact = at_threshold(model, xs, ours)
    spikes = int(sum(v.sum().item() for v in ours[1].values()))
    print(f"{name}: {spikes} spikes; raising every threshold by one float32 ulp changes {exact}")
    rows = []
    for threshold in ("sj", "spec"):
        graph = to_nir(model, xs[0], DT, threshold)
        readers = {"spikingjelly": lambda x, g=graph: nir_check.run_sj(
            g, nir_check.input_sequence(model, x), DT)}
        try:
            import snntorch  # noqa: F401

            readers["snntorch"] = lambda x, g=graph: nir_check.run_snntorch(
                g, nir_check.input_sequence(model, x))
        except ImportError:
            pass
        for reader, fn in readers.items():
            theirs = _batches(model, xs, fn)
            rep = nir_check.agreement(ours, theirs)
            row = {"model": name, "threshold": threshold, "reader": reader,
                   "spikes_ours": spikes, "spikes_at_threshold": exact, **rep}
            if labels is not None:
                row["accuracy_ours"] = (ours[0].mean(0).argmax(-1) == labels).float().mean().item()
                row["accuracy_reader"] = (theirs[0].mean(0).argmax(-1) == labels).float().mean().item()
            rows.append(row)
            print(f"{name:<16} {threshold:<5} {reader:<13} predictions {rep['same_prediction']:.2%} "
                  f"identical, spikes {rep['spikes_identical_all']:.5%} identical "
                  f"(worst layer {min(rep['spikes_identical'].values()):.5%}), "
                  f"max |out diff| {rep['max_logit_diff']:.3g}"
                  + (f", accuracy {row['accuracy_ours']:.2%} -> {row['accuracy_reader']:.2%}"
                     if labels is not None else ""))
    return rows


def digits_data():
    from sj_bwsnn.data import build_loaders
    from sj_bwsnn.engine.recipe import recipe_from_dict

    r = recipe_from_dict({"data": {"name": "digits", "batch_size": 150}})
    return build_loaders(r.data, r.seed)


def fc_net(train_loader, T: int = 4) -> nn.Module:
    torch.manual_seed(0)
    lif = dict(step_mode="m", backend="torch")
    net = nn.Sequential(layer.Flatten(step_mode="m"), sj_bwsnn.BinaryLinear(64, 128, step_mode="m"),
                        sj_bwsnn.neuron.LIFNode(**lif), sj_bwsnn.BinaryLinear(128, 10, step_mode="m"),
                        sj_bwsnn.neuron.LIFNode(**lif))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(15):
        for x, y in train_loader:
            out = net(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
            loss = nn.functional.mse_loss(out, nn.functional.one_hot(y, 10).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            functional.reset_net(net)
    return net.eval()


def pm1_net() -> nn.Module:
    """+-1 weights (``scaling='none'``), no bias, LIF tau 2: with binary input the membrane lands
    exactly on the threshold (``H = X / 2 = 1`` for two input spikes)."""
    torch.manual_seed(3)
    kw = dict(bias=False, scaling="none", step_mode="m")
    return nn.Sequential(sj_bwsnn.BinaryLinear(16, 32, **kw), sj_bwsnn.neuron.LIFNode(step_mode="m"),
                         sj_bwsnn.BinaryLinear(32, 8, **kw),
                         sj_bwsnn.neuron.LIFNode(step_mode="m")).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a digits_bwsnn training checkpoint (for bw_resnet_tiny)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--models", default="bw_resnet_tiny,fc_net,fc_pm1,bw_resnet18",
                   help="comma-separated subset of the models above")
    args = p.parse_args()
    models = args.models.split(",")
    if "bw_resnet_tiny" in models and not args.checkpoint:
        p.error("bw_resnet_tiny needs --checkpoint (sj-bwsnn train digits_bwsnn --out DIR)")
    torch.set_num_threads(2)
    from sj_bwsnn.analysis.source import source_from_checkpoint

    rows = []
    if "bw_resnet_tiny" in models:
        src = source_from_checkpoint(args.checkpoint)
        xs, ys = zip(*src.test_loader)
        rows += measure("bw_resnet_tiny", src.model, list(xs), torch.cat(ys))
    if "fc_net" in models:
        train, test, _ = digits_data()
        net = fc_net(train)
        xs, ys = zip(*test)
        rows += measure("fc_net", net, [x.unsqueeze(0).repeat(4, 1, 1, 1, 1) for x in xs],
                        torch.cat(ys))
    if "fc_pm1" in models:
        torch.manual_seed(4)
        rows += measure("fc_pm1", pm1_net(), [(torch.rand(4, 256, 16) < 0.5).float()])
    if "bw_resnet18" not in models:
        return _write(args, rows)
    import timm

    torch.manual_seed(0)
    r18 = timm.create_model("bw_resnet18", stem="cifar", num_classes=10, T=2)
    with torch.no_grad():
        for m in r18.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(0.0, 1.5)
    rows += measure("bw_resnet18", r18.eval(), [torch.rand(8, 3, 32, 32) for _ in range(2)])
    _write(args, rows)


def _write(args, rows) -> None:
    from importlib import metadata

    nir_versions = {}
    for pkg in ("nir", "nirtorch", "snntorch"):
        try:
            nir_versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            nir_versions[pkg] = None
    # nirtorch sums a node's inputs in the order of a Python set of edges: string hashing
    # (PYTHONHASHSEED) decides it, and with 3+ inputs the float rounding of the sum
    write_record(stamped(args.out, "nir_roundtrip"), "bench/nir_roundtrip.py",
                 checkpoint=args.checkpoint, dt=DT, nir_versions=nir_versions,
                 pythonhashseed=os.environ.get("PYTHONHASHSEED"), rows=rows)


if __name__ == "__main__":
    main()

"""One full training step (forward, backward, SGD) of BW-ResNet-18 vs SpikingJelly 2.0 vs an ANN.

    PYTHONPATH=$PWD python bench/train_step.py [--reps 15] [--batch 64] [--T 2] [--out bench/results]

ImageNet stem, 224x224, batch B, T steps, bf16 autocast, channels_last, SGD(momentum 0.9):

* ``bw_resnet18`` (sj_bwsnn, multi-shortcut, 1-bit weights, LIF backend 'auto' = fused CuPy kernel),
  eager and ``torch.compile``;
* SpikingJelly 2.0 ``spiking_resnet18`` (LIFNode, multi-step), eager and ``torch.compile``;
* torchvision ``resnet18`` at batch T*B (the ANN doing the same number of image passes).

Times: median over ``--reps`` of CUDA-event time around the Python step after warm-up (compilation
happens in warm-up), plus peak memory. Writes ``<out>/train_step_<gpu>_<utc date>.json``. Needs CUDA
and CuPy (one line and exit 2 otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import event_times_ms, refuse_without_gpu, stamped, write_record  # noqa: E402


class _RepeatT(torch.nn.Module):
    """SpikingJelly's multi-step convention: [N,C,H,W] -> [T,N,C,H,W] in, [T,N,K] -> [N,K] out."""

    def __init__(self, net: torch.nn.Module, T: int):
        super().__init__()
        self.net, self.T = net, T

    def forward(self, x):
        return self.net(x.unsqueeze(0).expand(self.T, *x.shape)).mean(0)


def build(name: str, T: int) -> torch.nn.Module:
    if name == "bw_resnet18":
        import timm

        import sj_bwsnn  # noqa: F401 - registers the models
        from sj_bwsnn.neuron import LIFNode

        return timm.create_model("bw_resnet18", T=T, num_classes=1000, neuron=LIFNode,
                                 neuron_kwargs=dict(backend="auto"))
    if name == "sj_spiking_resnet18":
        from spikingjelly.activation_based import functional, neuron, surrogate
        from spikingjelly.activation_based.model import spiking_resnet

        net = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.LIFNode,
                                              surrogate_function=surrogate.ATan(), detach_reset=True)
        functional.set_step_mode(net, "m")
        return _RepeatT(net, T)
    if name == "torchvision_resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=1000)
    raise ValueError(name)


def make_step(model, opt, x, y):
    from spikingjelly.activation_based import functional

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        functional.reset_net(model)

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--T", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    refuse_without_gpu("bench/train_step.py")

    torch.backends.cudnn.benchmark = True
    B, T = args.batch, args.T
    runs = [("bw_resnet18", False, B), ("bw_resnet18", True, B),
            ("sj_spiking_resnet18", False, B), ("sj_spiking_resnet18", True, B),
            ("torchvision_resnet18", False, T * B), ("torchvision_resnet18", True, T * B)]
    rows = []
    for name, compiled, batch in runs:
        torch.manual_seed(0)
        model = build(name, T).cuda().to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        fwd = torch.compile(model) if compiled else model
        x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,), device="cuda")
        step = make_step(fwd, opt, x, y)
        torch.cuda.reset_peak_memory_stats()
        try:
            times = event_times_ms(step, args.reps, warmup=5 if compiled else 3)
        except Exception as exc:  # noqa: BLE001 - record why a configuration could not run
            rows.append(dict(model=name, compiled=compiled, batch=batch, error=str(exc).splitlines()[0]))
            continue
        rows.append(dict(model=name, compiled=compiled, batch=batch, T=None if name.startswith("torchvision") else T,
                         median_ms=statistics.median(times), min_ms=min(times), times_ms=times,
                         peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30))
        del model, opt, fwd, step
        torch.cuda.empty_cache()

    print(f"{'model':24} {'compiled':>8} {'batch':>5} {'ms/step':>8} {'peak GiB':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:24} {str(r['compiled']):>8} {r['batch']:>5}  failed: {r['error'][:70]}")
        else:
            print(f"{r['model']:24} {str(r['compiled']):>8} {r['batch']:>5} {r['median_ms']:8.2f} "
                  f"{r['peak_mem_gib']:8.2f}")

    write_record(stamped(args.out, "train_step"), "bench/train_step.py", T=T, batch=B, image=224,
                 autocast="bfloat16", memory_format="channels_last", optimizer="SGD(0.9)",
                 reps=args.reps, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

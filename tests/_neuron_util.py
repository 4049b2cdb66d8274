"""Shared by the neuron tests (CPU host build and GPU): random node configurations, nodes, a loss."""

from __future__ import annotations

import random

from spikingjelly.activation_based import surrogate

from sj_bwsnn.neuron import IFNode, LIFNode

SURROGATES = [surrogate.Sigmoid, surrogate.ATan, surrogate.PiecewiseQuadratic, surrogate.PiecewiseExp,
              surrogate.SoftSign, surrogate.SuperSpike, surrogate.Erf]


def random_config(seed: int, t_choices=(1, 2, 4, 4, 7, 8)) -> dict:
    """A node configuration drawn from ``seed`` (``kind``, ``T`` and the node's keyword arguments);
    the surrogate cycles through :data:`SURROGATES` with the seed."""
    rng = random.Random(seed)
    return dict(
        kind=rng.choice(["lif", "if"]), tau=rng.choice([1.5, 2.0, 4.0]), decay_input=rng.random() < 0.5,
        v_threshold=rng.choice([0.5, 1.0]), v_reset=rng.choice([None, 0.0, -0.3]),
        surrogate_function=SURROGATES[seed % len(SURROGATES)](alpha=rng.choice([2.0, 4.0])),
        detach_reset=rng.random() < 0.5, store_v_seq=rng.random() < 0.5, temporal_grad=rng.random() < 0.7,
        T=rng.choice(list(t_choices)),
    )


def make_node(kind: str, backend: str = "torch", **kw):
    """A multi-step LIFNode / IFNode (an IF node drops ``tau`` and ``decay_input``)."""
    if kind != "lif":
        kw.pop("tau", None), kw.pop("decay_input", None)
    return (LIFNode if kind == "lif" else IFNode)(step_mode="m", backend=backend, **kw)


def node_of(cfg: dict, backend: str):
    """The node of a :func:`random_config`."""
    return make_node(cfg["kind"], backend, **{k: v for k, v in cfg.items() if k not in ("kind", "T")})


def loss_of(spikes, node, weights):
    """A loss that reaches every output: spikes, the final state and (when stored) v_seq
    (float64 weights, moved to the spikes' device)."""
    w_s, w_v, w_seq = (w.to(spikes.device) for w in weights)
    loss = (spikes.double() * w_s).sum() + (node.v.double() * w_v).sum()
    if node.store_v_seq:
        loss = loss + (node.v_seq.double() * w_seq).sum()
    return loss

"""Registered models. Importing this module registers them with timm."""

from .bw_resnet import BWResNet, bw_resnet18, bw_resnet34, bw_resnet_tiny
from .bw_spikformer import (
    BWSpikformer,
    bw_spikformer_4_384_cifar,
    bw_spikformer_8_384,
    bw_spikformer_8_512,
    bw_spikformer_8_768,
    bw_spikformer_ti,
)
from .hlop_nets import SpikingCNN, SpikingMLP, spiking_cnn, spiking_mlp

__all__ = [
    "BWResNet", "bw_resnet18", "bw_resnet34", "bw_resnet_tiny",
    "BWSpikformer", "bw_spikformer_ti", "bw_spikformer_8_384", "bw_spikformer_8_512",
    "bw_spikformer_8_768", "bw_spikformer_4_384_cifar",
    "SpikingCNN", "SpikingMLP", "spiking_cnn", "spiking_mlp",
]

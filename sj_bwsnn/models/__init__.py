"""Registered models. Importing this module registers them with timm."""

from .bw_resnet import BWResNet, bw_resnet18, bw_resnet34, bw_resnet_tiny
from .fsnn import FeedbackSNN
from .fsnn_archs import (
    fsnn_alexnet_f,
    fsnn_cifarnet_f,
    fsnn_conv,
    fsnn_convnet_f,
    fsnn_fc,
)
from .bw_spikformer import (
    BWSpikformer,
    bw_spikformer_4_384_cifar,
    bw_spikformer_8_384,
    bw_spikformer_8_512,
    bw_spikformer_8_768,
    bw_spikformer_ti,
)
from .plain import PlainSNN, bw_snn_cnn, bw_snn_mlp
from .hlop_nets import SpikingCNN, SpikingMLP, spiking_cnn, spiking_mlp

__all__ = [
    "BWResNet", "bw_resnet18", "bw_resnet34", "bw_resnet_tiny",
    "BWSpikformer", "bw_spikformer_ti", "bw_spikformer_8_384", "bw_spikformer_8_512",
    "bw_spikformer_8_768", "bw_spikformer_4_384_cifar",
    "FeedbackSNN", "fsnn_fc", "fsnn_conv", "fsnn_alexnet_f", "fsnn_cifarnet_f", "fsnn_convnet_f",
    "PlainSNN", "bw_snn_mlp", "bw_snn_cnn",
    "SpikingCNN", "SpikingMLP", "spiking_cnn", "spiking_mlp",
]

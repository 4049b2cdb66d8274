"""Registered models. Importing this module registers them with timm."""

from .bw_resnet import BWResNet, bw_resnet18, bw_resnet34, bw_resnet_tiny

__all__ = ["BWResNet", "bw_resnet18", "bw_resnet34", "bw_resnet_tiny"]

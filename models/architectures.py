"""The model architectures, rebuilt from config alone (no pickled code ever)."""

from __future__ import annotations

import sys

import torch
from torch import nn

from models.config import ARCHITECTURES, ArchConfig, CNNConfig, MLPConfig, NormKind


class Standardize(nn.Module):
    """(x - mean) / std with statistics fitted on the training split, stored as buffers in the checkpoint."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, stat_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _norm_1d(kind: NormKind, width: int, momentum: float, track_running_stats: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(width, momentum=momentum, track_running_stats=track_running_stats)
    if kind == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()


def _norm_2d(kind: NormKind, channels: int, momentum: float, track_running_stats: bool) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, momentum=momentum, track_running_stats=track_running_stats)
    if kind == "layer":
        # GroupNorm with one group normalizes each sample over (C, H, W): LayerNorm for feature maps.
        return nn.GroupNorm(1, channels)
    return nn.Identity()


class MLP(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.standardize = Standardize((config.in_features,))
        layers: list[nn.Module] = []
        width_in = config.in_features
        for width in config.hidden:
            layers += [
                nn.Linear(width_in, width),
                _norm_1d(config.norm, width, config.bn_momentum, config.track_running_stats),
                nn.ReLU(),
                nn.Dropout(config.dropout),
            ]
            width_in = width
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(width_in, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, in_features) -> logits (N, num_classes)
        return self.head(self.blocks(self.standardize(x)))


class CNN(nn.Module):
    def __init__(self, config: CNNConfig) -> None:
        super().__init__()
        # Per-channel statistics, broadcast over (H, W).
        self.standardize = Standardize((config.in_channels, 1, 1))
        layers: list[nn.Module] = []
        channels_in, height, width = config.in_channels, config.height, config.width
        for index, channels in enumerate(config.channels):
            layers += [
                nn.Conv2d(channels_in, channels, kernel_size=3, padding=1),
                _norm_2d(config.norm, channels, config.bn_momentum, config.track_running_stats),
                nn.ReLU(),
            ]
            # Halve the feature map between blocks while it is at least 4x4: later (wider) blocks then cost
            # a quarter of the compute, which keeps wide CNNs on small images trainable on a CPU.
            if index < len(config.channels) - 1 and min(height, width) >= 4:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            channels_in = channels
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(channels_in, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, C, H, W) -> features (N, C_last, H', W') -> pooled (N, C_last) -> logits (N, num_classes)
        pooled = self.pool(self.blocks(self.standardize(x))).flatten(1)
        return self.head(self.dropout(pooled))


def build_model(config: ArchConfig) -> nn.Module:
    """A freshly initialized model for `config`; weights come from a checkpoint or from training.

    The module class is the one `ARCHITECTURES` names for `config.arch`, checked to take this config type.
    """
    row = ARCHITECTURES[config.arch]
    if not isinstance(config, row.config_type):
        raise TypeError(f"{row.name} takes a {row.config_type.__name__}, got a {type(config).__name__}")
    module_type = getattr(sys.modules[__name__], row.module)
    model: nn.Module = module_type(config)
    return model


def batchnorm_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of `model`, by its qualified name."""
    return {
        name: module for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
    }

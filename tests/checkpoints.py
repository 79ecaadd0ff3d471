"""Tiny checkpoints for tests, written through the real checkpoint module (no training CLI needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from models import ArchConfig, CNNConfig, InputSpec, Manifest, MLPConfig, build_model, save_checkpoint

TINY_MLP = MLPConfig(in_features=16, num_classes=4, hidden=(32, 32), norm="batch", dropout=0.2)
TINY_CNN = CNNConfig(in_channels=1, height=8, width=8, num_classes=3, channels=(4, 8), norm="batch", dropout=0.2)


def write_checkpoint(repository: Path, name: str, config: ArchConfig = TINY_MLP, seed: int = 0) -> Path:
    """A model whose BatchNorm running statistics were updated by a few train-mode batches, saved as the
    next version of `name`. Returns the version directory."""
    torch.manual_seed(seed)
    model = build_model(config)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn((32, *config.input_shape), generator=generator) * 2 + 1)
    manifest = Manifest(
        name=name,
        version=0,
        architecture=config,
        input=InputSpec(shape=config.input_shape, feature_names=tuple(f"f{i}" for i in range(16))),
        class_labels=tuple(f"class-{i}" for i in range(config.num_classes)),
        training={"source": "tests"},
    )
    return save_checkpoint(repository, model, manifest)

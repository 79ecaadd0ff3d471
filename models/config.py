"""Architecture configs: frozen data from which `build_model` rebuilds a model, with no code in the file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

NormKind = Literal["batch", "layer", "none"]
NORM_KINDS: tuple[str, ...] = get_args(NormKind)


@dataclass(frozen=True)
class MLPConfig:
    """Standardize -> [Linear -> Norm -> ReLU -> Dropout] * len(hidden) -> Linear. Input: (N, in_features)."""

    in_features: int
    num_classes: int
    hidden: tuple[int, ...] = (256, 256)
    norm: NormKind = "batch"
    dropout: float = 0.0
    bn_momentum: float = 0.1
    # Always True for models we train; kept in the format so a checkpoint that says False can be refused.
    track_running_stats: bool = True
    arch: Literal["mlp"] = "mlp"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_features,)


@dataclass(frozen=True)
class CNNConfig:
    """Standardize -> [Conv3x3 -> Norm -> ReLU] * len(channels) -> global avg pool -> Dropout -> Linear.

    Input: (N, in_channels, height, width).
    """

    in_channels: int
    height: int
    width: int
    num_classes: int
    channels: tuple[int, ...] = (32, 64)
    norm: NormKind = "batch"
    dropout: float = 0.0
    bn_momentum: float = 0.1
    track_running_stats: bool = True
    arch: Literal["cnn"] = "cnn"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.height, self.width)


ArchConfig = MLPConfig | CNNConfig
_CONFIG_TYPES: dict[str, type[MLPConfig] | type[CNNConfig]] = {"mlp": MLPConfig, "cnn": CNNConfig}


@dataclass(frozen=True)
class InputSpec:
    """What one input row looks like: shape without the batch dimension, dtype and feature names."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    feature_names: tuple[str, ...] = ()


def config_to_dict(config: ArchConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> ArchConfig:
    """Rebuild a config from its JSON form; raises ValueError naming the problem."""
    arch = data.get("arch")
    if arch not in _CONFIG_TYPES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(_CONFIG_TYPES)}")
    config_type = _CONFIG_TYPES[arch]
    known = {field.name for field in dataclasses.fields(config_type)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {arch} config fields: {unknown}")
    values: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
    try:
        config = config_type(**values)
    except TypeError as exc:
        raise ValueError(f"invalid {arch} config: {exc}") from exc
    validate_config(config)
    return config


def validate_config(config: ArchConfig) -> None:
    if config.norm not in NORM_KINDS:
        raise ValueError(f"norm must be one of {NORM_KINDS}, got {config.norm!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    widths = config.hidden if isinstance(config, MLPConfig) else config.channels
    if not widths or any(width < 1 for width in widths):
        raise ValueError(f"layer widths must be positive integers, got {list(widths)}")
    if config.num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {config.num_classes}")

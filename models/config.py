"""Architecture configs and the one table of architectures (`ARCHITECTURES`).

A config is frozen data from which `build_model` rebuilds a model, with no code in the file. The table says,
per architecture, which config class and module it uses, how its input rows are laid out and its default
widths; the training CLI's choices, data loading, training and `build_model` all read it, so adding a row
(with its config class and module) is the whole of adding an architecture. This module does not import
torch (the training CLI reads the table before deciding it needs torch).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

from models.imported import ImportedConfig
from models.preprocess import Preprocessing

NormKind = Literal["batch", "layer", "none"]
NORM_KINDS: tuple[str, ...] = get_args(NormKind)
# flat: one row is a feature vector (F,); image: one row is a feature map (C, H, W).
InputLayout = Literal["flat", "image"]


@dataclass(frozen=True)
class Common:
    """The settings every architecture shares (what `for_input` takes besides shapes and widths)."""

    norm: NormKind = "batch"
    dropout: float = 0.0
    bn_momentum: float = 0.1


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

    @property
    def widths(self) -> tuple[int, ...]:
        return self.hidden

    @classmethod
    def for_input(
        cls, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, ...], common: Common
    ) -> MLPConfig:
        """The config for rows shaped `input_shape` = (F,)."""
        (in_features,) = input_shape
        return cls(in_features, num_classes, widths, common.norm, common.dropout, common.bn_momentum)


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

    @property
    def widths(self) -> tuple[int, ...]:
        return self.channels

    @classmethod
    def for_input(
        cls, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, ...], common: Common
    ) -> CNNConfig:
        """The config for rows shaped `input_shape` = (C, H, W)."""
        in_channels, height, width = input_shape
        return cls(in_channels, height, width, num_classes, widths, common.norm, common.dropout, common.bn_momentum)


ArchConfig = MLPConfig | CNNConfig


@dataclass(frozen=True)
class Architecture:
    """One row of the table of architectures."""

    name: str  # the config's `arch` value, the --arch choice and the manifest's "arch"
    config_type: type[MLPConfig] | type[CNNConfig]
    module: str  # class in models.architectures that `build_model` instantiates (named: that module imports torch)
    layout: InputLayout
    default_widths: tuple[int, ...]
    widths_meaning: str  # what --hidden sets for this architecture

    @property
    def standardization(self) -> str:
        """How the model's Standardize layer pools its statistics: per input feature or per image channel."""
        return "per feature" if self.layout == "flat" else "per channel"

    def input_shape(self, flat_size: int, image_shape: tuple[int, int, int] | None) -> tuple[int, ...] | None:
        """The row shape this architecture takes for data of `flat_size` features, None if it cannot take it.

        `image_shape` is the data's (C, H, W) when its rows are images (None for tabular data such as CSV).
        """
        if self.layout == "flat":
            return (flat_size,)
        if image_shape is None or math.prod(image_shape) != flat_size:
            return None
        return image_shape


ARCHITECTURES: dict[str, Architecture] = {
    row.name: row
    for row in (
        Architecture("mlp", MLPConfig, "MLP", "flat", (256, 256), "hidden layer widths"),
        Architecture("cnn", CNNConfig, "CNN", "image", (32, 64), "conv channel widths"),
    )
}


@dataclass(frozen=True)
class InputSpec:
    """What one input row looks like: shape without the batch dimension, dtype and feature names.

    `preprocessing` (models trained on a CSV): how a raw row keyed by the CSV's column names becomes this
    input; `feature_names` then name the encoded inputs ('age', 'color=red', 'age:missing').
    """

    shape: tuple[int, ...]
    dtype: str = "float32"
    feature_names: tuple[str, ...] = ()
    preprocessing: Preprocessing | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "feature_names": list(self.feature_names),
        }
        if self.preprocessing is not None:
            data["preprocessing"] = self.preprocessing.to_json()
        return data


def config_to_dict(config: ArchConfig | ImportedConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> ArchConfig:
    """Rebuild a config from its JSON form; raises ValueError naming the problem."""
    arch = data.get("arch")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {sorted(ARCHITECTURES)}")
    config_type = ARCHITECTURES[arch].config_type
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


# What a manifest may claim, checked before any model is built (even on the meta device): far above what
# this server is for (CPU models of at most a few million parameters), far below what would exhaust it.
MAX_LAYERS = 256
MAX_WIDTH = 1 << 16  # hidden widths, CNN channels, classes
MAX_INPUT_VALUES = 1 << 24  # values in one input row (features, or channels x height x width)


def validate_config(config: ArchConfig) -> None:
    sizes = (*config.widths, *config.input_shape, config.num_classes)
    if not all(type(size) is int for size in sizes):
        raise ValueError(f"layer widths, input shape and num_classes must be integers, got {list(sizes)}")
    if len(config.widths) > MAX_LAYERS or max(config.widths, default=0) > MAX_WIDTH:
        raise ValueError(f"at most {MAX_LAYERS} layers of at most {MAX_WIDTH} units, got {list(config.widths)}")
    if config.num_classes > MAX_WIDTH or math.prod(config.input_shape) > MAX_INPUT_VALUES:
        raise ValueError(
            f"at most {MAX_WIDTH} classes and {MAX_INPUT_VALUES} input values per row, got "
            f"{config.num_classes} classes and input shape {list(config.input_shape)}"
        )
    if min(config.input_shape) < 1:
        raise ValueError(f"input shape must be positive, got {list(config.input_shape)}")
    if config.norm not in NORM_KINDS:
        raise ValueError(f"norm must be one of {NORM_KINDS}, got {config.norm!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    widths = config.widths
    if not widths or any(width < 1 for width in widths):
        raise ValueError(f"layer widths must be positive integers, got {list(widths)}")
    # 1: a regression model's single output (models.checkpoint checks the manifest's task agrees).
    if config.num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {config.num_classes}")

"""Architectures and the one checkpoint format of invariant-serve."""

from models.architectures import batchnorm_layers, build_model
from models.checkpoint import (
    CheckpointError,
    Manifest,
    list_model_names,
    list_versions,
    load_checkpoint,
    save_checkpoint,
)
from models.config import ArchConfig, CNNConfig, InputSpec, MLPConfig, config_from_dict, config_to_dict

__all__ = [
    "ArchConfig",
    "CNNConfig",
    "CheckpointError",
    "InputSpec",
    "MLPConfig",
    "Manifest",
    "batchnorm_layers",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "list_model_names",
    "list_versions",
    "load_checkpoint",
    "save_checkpoint",
]

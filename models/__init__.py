"""Architectures and the one checkpoint format of invariant-serve.

Names are imported on first use (PEP 562): `models.config` and its table of architectures stay importable
without torch, which takes seconds to import (the training CLI rejects a bad flag before that).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.architectures import batchnorm_layers, build_model
    from models.checkpoint import CheckpointError, Manifest, load_checkpoint, save_checkpoint
    from models.config import (
        ARCHITECTURES,
        ArchConfig,
        Architecture,
        CNNConfig,
        InputSpec,
        MLPConfig,
        config_from_dict,
        config_to_dict,
    )
    from models.scan import IgnoredEntry, list_model_dirs, list_model_names, list_versions, scan_versions
    from models.versions import parse_version

__all__ = [
    "ARCHITECTURES",
    "ArchConfig",
    "Architecture",
    "CNNConfig",
    "CheckpointError",
    "IgnoredEntry",
    "InputSpec",
    "MLPConfig",
    "Manifest",
    "batchnorm_layers",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "list_model_dirs",
    "list_model_names",
    "list_versions",
    "load_checkpoint",
    "parse_version",
    "save_checkpoint",
    "scan_versions",
]

# Which submodule defines each public name (the TYPE_CHECKING imports above, for the type checker).
_HOMES = {
    "models.architectures": ("batchnorm_layers", "build_model"),
    "models.checkpoint": ("CheckpointError", "Manifest", "load_checkpoint", "save_checkpoint"),
    "models.scan": ("IgnoredEntry", "list_model_dirs", "list_model_names", "list_versions", "scan_versions"),
    "models.versions": ("parse_version",),
    "models.config": (
        "ARCHITECTURES",
        "ArchConfig",
        "Architecture",
        "CNNConfig",
        "InputSpec",
        "MLPConfig",
        "config_from_dict",
        "config_to_dict",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME_OF[name]), name)

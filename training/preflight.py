"""Checks made before training starts, so that minutes of training are never lost to a repository that cannot
take the checkpoint: it must be writable (a file is created and removed there, which also catches read-only
mounts and ACLs that `access(2)` misses) and have room for the checkpoint plus headroom.

Nothing is created: when the repository does not exist yet, its nearest existing ancestor is checked (that is
where `save_checkpoint` will create it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from models.architectures import build_model
from models.config import ArchConfig
from training.errors import InputError

# Beyond the weights: manifest.json, curves.png (~100 KB), the safetensors header, filesystem blocks.
HEADROOM_BYTES = 1 << 20


def checkpoint_bytes(config: ArchConfig) -> int:
    """Bytes of the tensors of the weights file a model of `config` is saved as (its state dict). The model is
    built under a forked RNG: the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        model = build_model(config)
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


def check_repository(repository: Path, weights_bytes: int) -> None:
    """Raises InputError (one line) when `repository` cannot take a checkpoint of `weights_bytes` weights."""
    existing = nearest_existing(repository)
    if not existing.is_dir():
        raise InputError(f"repository {repository}: {existing} is not a directory")
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".invariant-write-check-", dir=existing)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"repository {repository} is not writable: {exc.strerror}; nothing was trained") from None
    status = os.statvfs(existing)
    free, needed = status.f_bavail * status.f_frsize, weights_bytes + HEADROOM_BYTES
    if free < needed:
        raise InputError(
            f"repository {repository} has {_kib(free)} free, the checkpoint needs about {_kib(needed)}; "
            "nothing was trained"
        )


def nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KiB"

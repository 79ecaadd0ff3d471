"""The one checkpoint format: `<repository>/<name>/<version>/{model.safetensors, manifest.json, ...}`.

Besides the weights and the manifest a version may hold files for people (training writes `curves.png`);
the manifest's `artifacts` names them by role, e.g. {"curves": "curves.png"}. The server never reads them.

Weights are safetensors (never pickle); the architecture is JSON data that `build_model` turns back into
code from this package. Versions are integers, written atomically (temporary directory, then rename) and
never overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.architectures import build_model
from models.config import ArchConfig, InputSpec, config_from_dict, config_to_dict
from models.files import MAX_MANIFEST_BYTES, descriptor_path, open_regular, read_bounded
from models.imported import IMPORTED_FORMATS, ImportedConfig, imported_from_dict
from models.preprocess import PreprocessError, Preprocessing
from models.scan import list_versions
from models.staging import remove_abandoned_staging, staging_prefix
from models.versions import is_model_name
from models.weights_header import HeaderMismatch, check_header

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"


class CheckpointError(Exception):
    """A checkpoint that cannot be written or loaded; the message names the problem."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    architecture: ArchConfig | ImportedConfig  # imported: a graph file brought by its user (models/package.py)
    input: InputSpec
    class_labels: tuple[str, ...]
    training: dict[str, Any] = field(default_factory=dict)
    epochs: tuple[dict[str, float], ...] = ()
    final_metrics: dict[str, float] = field(default_factory=dict)
    weights_sha256: str = ""
    artifacts: dict[str, str] = field(default_factory=dict)  # role -> file name in the version directory
    torch_version: str = torch.__version__
    created_at: str = ""
    format_version: int = FORMAT_VERSION
    # "regression": one output, a standardized target; `target` holds its training-split mean and std, so
    # value = output * std + mean. Manifests written before regression existed are classification.
    task: str = "classification"
    target: TargetScale | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "architecture": config_to_dict(self.architecture),
            "input": self.input.to_json(),
            "class_labels": list(self.class_labels),
            "training": self.training,
            "epochs": list(self.epochs),
            "final_metrics": self.final_metrics,
            "weights_sha256": self.weights_sha256,
            "artifacts": self.artifacts,
            "torch_version": self.torch_version,
            "task": self.task,
        } | ({"target": dataclasses.asdict(self.target)} if self.target is not None else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"unknown manifest format_version {data.get('format_version')!r} (this server reads {FORMAT_VERSION})"
            )
        try:
            spec = data["input"]
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                architecture=architecture_from_dict(data["architecture"]),
                input=_input_spec(spec),
                class_labels=tuple(str(label) for label in data["class_labels"]),
                training=dict(data.get("training", {})),
                epochs=tuple(data.get("epochs", ())),
                final_metrics=dict(data.get("final_metrics", {})),
                weights_sha256=str(data["weights_sha256"]),
                artifacts={str(role): str(file) for role, file in data.get("artifacts", {}).items()},
                torch_version=str(data.get("torch_version", "")),
                created_at=str(data.get("created_at", "")),
                **_task(data),
            )
        except PreprocessError as exc:
            raise CheckpointError(f"invalid manifest: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid manifest: {exc!r}") from exc


def architecture_from_dict(data: Any) -> ArchConfig | ImportedConfig:
    if not isinstance(data, dict):
        raise ValueError("architecture is not a JSON object")
    return imported_from_dict(data) if data.get("arch") in IMPORTED_FORMATS else config_from_dict(data)


@dataclass(frozen=True)
class TargetScale:
    """A regression target's training-split statistics: the model predicts (target - mean) / std."""

    name: str
    mean: float
    std: float


def _input_spec(spec: dict[str, Any]) -> InputSpec:
    shape = tuple(int(n) for n in spec["shape"])
    names = tuple(str(f) for f in spec.get("feature_names", ()))
    preprocessing = None
    if "preprocessing" in spec:
        preprocessing = Preprocessing.from_json(spec["preprocessing"])
        if shape != (preprocessing.width,) or names != preprocessing.feature_names():
            raise PreprocessError(
                f"input shape {list(shape)} and feature names do not match the preprocessing's "
                f"{preprocessing.width} encoded inputs"
            )
    return InputSpec(shape=shape, dtype=str(spec["dtype"]), feature_names=names, preprocessing=preprocessing)


def _task(data: dict[str, Any]) -> dict[str, Any]:
    """`task` and `target`, checked: a regression manifest has one output, no classes and a finite scale."""
    task = data.get("task", "classification")
    if task == "classification":
        if "target" in data or data.get("architecture", {}).get("num_classes") == 1:
            raise PreprocessError("a classification manifest has at least 2 classes and no target")
        return {"task": task, "target": None}
    if task != "regression":
        raise PreprocessError(f"task must be classification or regression, got {task!r}")
    target = data.get("target")
    if not isinstance(target, dict) or set(target) != {"name", "mean", "std"}:
        raise PreprocessError('a regression manifest needs "target": {"name", "mean", "std"}')
    mean, std = target["mean"], target["std"]
    if not all(type(v) in {int, float} and math.isfinite(v) for v in (mean, std)) or std <= 0:
        raise PreprocessError(f"regression target mean {mean!r} and std {std!r} must be finite, std > 0")
    if data.get("class_labels") != [] or data.get("architecture", {}).get("num_classes") != 1:
        raise PreprocessError("a regression manifest has one output (num_classes 1) and no class_labels")
    return {"task": task, "target": TargetScale(str(target["name"]), float(mean), float(std))}


def sha256_of(path: Path) -> str:
    with open_regular(path) as handle:
        return _sha256_of_handle(handle)


def check_sha256(path: Path, expected: str, name: str) -> None:
    """CheckpointError unless the file's sha256 is the manifest's `expected` (`name`: the file as the
    manifest names it)."""
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read {name}: {exc.strerror}") from None
    if actual != expected:
        raise CheckpointError(f"checksum mismatch: {name} has sha256 {actual}, manifest says {expected}")


def _sha256_of_handle(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    repository: Path, model: nn.Module, manifest: Manifest, artifacts: Mapping[str, bytes] | None = None
) -> Path:
    """Write `model` as the next version of `manifest.name`; returns the version directory.

    `artifacts` maps file names to contents written beside the weights, in the same atomic rename; the
    manifest must name each of them in its `artifacts`. `manifest.version`, `weights_sha256` and
    `created_at` are filled in here.
    """
    if not is_model_name(manifest.name):
        raise CheckpointError(f"invalid model name {manifest.name!r}: use letters, digits, '_', '.', '-'")
    artifacts = dict(artifacts or {})
    _check_artifacts(manifest, artifacts)
    model_dir = Path(repository) / manifest.name
    created = _missing_directories(model_dir)  # removed again (when still empty) if this write fails
    published = False
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        version_dir = _write_version(model_dir, model, manifest, artifacts)
        published = True
        return version_dir
    finally:
        if not published:
            for directory in reversed(created):  # deepest first; one another writer filled is kept
                with contextlib.suppress(OSError):
                    directory.rmdir()


def _missing_directories(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _write_version(model_dir: Path, model: nn.Module, manifest: Manifest, artifacts: dict[str, bytes]) -> Path:
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in model.state_dict().items()}
    remove_abandoned_staging(model_dir)  # left by writers that were killed before publishing
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=model_dir))
    # mkdtemp makes 0700; a published version is readable by a server running as another user (docker).
    staging.chmod(0o755)
    try:
        weights_path = staging / WEIGHTS_FILE
        try:
            save_file(state, str(weights_path))
        except SafetensorError as exc:  # safetensors reports a full disk as its own error, not OSError
            raise CheckpointError(f"could not write {WEIGHTS_FILE}: {exc}") from None
        weights_path.chmod(0o644)  # safetensors writes 0600; readable like its 0755 directory
        _fsync(weights_path)
        for file_name, content in artifacts.items():
            (staging / file_name).write_bytes(content)
            _fsync(staging / file_name)
        sha = sha256_of(weights_path)
        return _publish(staging, model_dir, manifest, sha)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_imported(repository: Path, manifest: Manifest, sources: Mapping[str, Path]) -> Path:
    """Publish the files of an imported model (version-directory name -> file to copy) as the next version of
    `manifest.name`, atomically like save_checkpoint; weights_sha256 is the sha256 of the architecture's file."""
    if not is_model_name(manifest.name):
        raise CheckpointError(f"invalid model name {manifest.name!r}: use letters, digits, '_', '.', '-'")
    if not isinstance(manifest.architecture, ImportedConfig) or manifest.architecture.file not in sources:
        raise CheckpointError("save_imported needs an imported architecture whose file is among the sources")
    model_dir = Path(repository) / manifest.name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(), dir=model_dir))
    staging.chmod(0o755)
    try:
        for file_name, source in sources.items():
            if not is_model_name(file_name) or file_name == MANIFEST_FILE:
                raise CheckpointError(f"invalid file name {file_name!r}")
            shutil.copyfile(source, staging / file_name)
            (staging / file_name).chmod(0o644)
            _fsync(staging / file_name)
        return _publish(staging, model_dir, manifest, sha256_of(staging / manifest.architecture.file))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_artifacts(manifest: Manifest, artifacts: dict[str, bytes]) -> None:
    named = sorted(manifest.artifacts.values())
    if named != sorted(artifacts):
        raise CheckpointError(f"manifest artifacts {named} do not match the files given {sorted(artifacts)}")
    for file_name in artifacts:
        if not is_model_name(file_name) or file_name in {WEIGHTS_FILE, MANIFEST_FILE}:
            raise CheckpointError(f"invalid artifact file name {file_name!r}")


def _publish(staging: Path, model_dir: Path, manifest: Manifest, sha: str) -> Path:
    # rename(2) of a directory onto an existing non-empty one fails, so a concurrent writer that took
    # the same version number makes us retry with the next one instead of overwriting.
    while True:
        version = max(list_versions(model_dir.parent, model_dir.name), default=0) + 1
        created = datetime.now(UTC).isoformat(timespec="seconds")
        final = dataclasses.replace(manifest, version=version, weights_sha256=sha, created_at=created)
        manifest_path = staging / MANIFEST_FILE
        manifest_path.write_text(json.dumps(final.to_json(), indent=2) + "\n")
        manifest_path.chmod(0o644)
        _fsync(manifest_path)
        target = model_dir / str(version)
        try:
            os.rename(staging, target)
        except OSError:
            if target.exists():
                continue
            raise
        _fsync_dir(model_dir)
        return target


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(version_dir: Path) -> Manifest:
    path = Path(version_dir) / MANIFEST_FILE
    try:
        data = json.loads(read_bounded(path, MAX_MANIFEST_BYTES))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # File names only, never the server's paths: these reasons reach clients.
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise CheckpointError(f"unreadable manifest {MANIFEST_FILE}: {detail}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"manifest {MANIFEST_FILE} is not a JSON object")
    return Manifest.from_json(data)


def load_checkpoint(version_dir: Path) -> tuple[nn.Module, Manifest]:
    """Rebuild the model of a version directory: sha256 verified (streamed), shapes checked against the
    weights header before anything is allocated, strict load, never unpickles. Every read goes through one descriptor of
    a regular file (models/files.py), so the file checked is the file loaded.

    The model is returned as built (training mode); the server decides how to run it.
    """
    manifest = read_manifest(version_dir)
    if isinstance(manifest.architecture, ImportedConfig):
        raise CheckpointError(f"version holds an imported {manifest.architecture.arch} model, not a checkpoint")
    try:
        with open_regular(Path(version_dir) / WEIGHTS_FILE) as handle:
            actual_sha, claimed = _sha256_of_handle(handle), manifest.weights_sha256  # streamed, 1 MiB at a time
            if actual_sha != claimed:
                raise CheckpointError(
                    f"checksum mismatch: {WEIGHTS_FILE} has sha256 {actual_sha}, manifest says {claimed}"
                )
            check_header(manifest.architecture, handle)  # before any allocation: names, dtypes, shapes, sizes
            state = load_file(descriptor_path(handle))
    except HeaderMismatch as exc:
        raise CheckpointError(str(exc)) from None
    except FileNotFoundError:
        raise CheckpointError(f"missing weights file {WEIGHTS_FILE}") from None
    except (SafetensorError, OSError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise CheckpointError(f"unreadable weights {WEIGHTS_FILE}: {detail}") from exc
    model = build_model(manifest.architecture)  # narrowed to ArchConfig above
    model.load_state_dict(state, strict=True)
    return model, manifest

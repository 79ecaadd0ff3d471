"""What the ONNX and torch.export executors share when they open an imported version directory: the manifest
names an imported model of this format, the settings allow it (CPU, float32), the file is the one the
manifest hashed, the graph's signature is the manifest's, and the executor at the preferred C (the setting's,
or calibrated). Every refusal is a CheckpointError carrying the reason: the loader refuses the version with
it (the engine sits below service.guarantee, whose ModelRefused it cannot import)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from models import Manifest
from models.checkpoint import CheckpointError, check_sha256
from models.imported import ImportedConfig
from models.onnx_check import ImportRefused
from models.pt2_check import model_format
from service.engine.calibration import calibrate
from service.engine.executor_factory import DEFAULT_CHUNK_ROWS
from service.engine.types import Executor
from service.settings import Settings

Format = Literal["onnx", "pt2"]
_WHAT = {"onnx": "an ONNX graph", "pt2": "a torch.export archive"}
# (chunk_rows, calibration details or None) -> the executor at that C
MakeExecutor = Callable[[int, dict[str, Any] | None], Executor]
T = TypeVar("T")


class Signature(Protocol):
    """What both pre-checks read from the graph (OnnxSignature, Pt2Signature)."""

    @property
    def input_name(self) -> str: ...
    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def output_name(self) -> str: ...
    @property
    def num_classes(self) -> int: ...


def open_imported(path: Path, manifest: Manifest, settings: Settings, fmt: Format) -> tuple[ImportedConfig, Path]:
    """The manifest's imported config and the model file's path, after the checks that need no parsing:
    the format, the settings, the file's sha256 and the format of its bytes."""
    config = manifest.architecture
    if not isinstance(config, ImportedConfig) or config.arch != fmt:
        raise CheckpointError(f"the manifest does not describe {_WHAT[fmt]} imported with models.package")
    if settings.device == "cuda" or settings.dtype != "float32":
        raise CheckpointError(
            f"imported models ({_WHAT[fmt]}) run on the CPU in float32 (device cpu or auto, dtype float32)"
        )
    model_path = path / config.file
    check_sha256(model_path, manifest.weights_sha256, config.file)
    found = refusal_as_error(lambda: model_format(model_path))
    if found != fmt:
        raise CheckpointError(
            f"{config.file} does not hold {_WHAT[fmt]} (the manifest's format); its bytes are {found}"
        )
    return config, model_path


def refusal_as_error(check: Callable[[], T]) -> T:
    """A pre-check's ImportRefused as the loader's CheckpointError, same message."""
    try:
        return check()
    except ImportRefused as exc:
        raise CheckpointError(str(exc)) from None


def check_signature(signature: Signature, config: ImportedConfig, manifest: Manifest) -> None:
    """The graph's (input name, input shape, output name, classes) must be the manifest's."""
    graph_says = (signature.input_name, signature.input_shape, signature.output_name, signature.num_classes)
    manifest_says = (config.input_name, manifest.input.shape, config.output_name, len(manifest.class_labels))
    if graph_says != manifest_says:
        raise CheckpointError(f"the graph's signature {graph_says} is not the manifest's {manifest_says}")


def executors_at(make: MakeExecutor, settings: Settings) -> tuple[Callable[[int], Executor], Executor]:
    """build(C) -> the executor at C (the shape proof may try other C; service/guarantee/shape.py), and the
    preferred executor: the setting's C, or the calibrated one."""
    if settings.chunk_rows != "auto":
        preferred = make(settings.chunk_rows or DEFAULT_CHUNK_ROWS["cpu"], None)
    else:
        calibration = calibrate(lambda rows: make(rows, None), settings.chunk_latency_bound_ms)
        preferred = make(calibration.chunk_rows, calibration.describe())
    return (lambda chunk_rows: preferred if chunk_rows == preferred.chunk_rows else make(chunk_rows, None)), preferred

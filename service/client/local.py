"""`--local REPO`: the version loaded, verified and self-tested exactly as the server loads it
(service.lifecycle.loader.verify_version), then run through that same executor at the same C. Imports torch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from models.labels import STABLE, LabelsError, read_labels
from models.versions import parse_version
from service.client.remote import ServedVersion
from service.client.table import ClientError, ModelInput
from service.engine.types import Float32Array, Int64Array
from service.settings import Settings

Run = Callable[[Float32Array], tuple[Int64Array, Float32Array]]


def open_local(
    repository: Path, name: str, version: str | None, chunk_rows: int | None, threads: int
) -> tuple[ServedVersion, Run]:
    from service.engine.numerics import pin_numerics
    from service.lifecycle.loader import Refusal, verify_version
    from service.observability.metrics import Metrics

    number = _version_of(repository / name, version)
    settings = Settings(repository=repository, chunk_rows=chunk_rows, threads=threads, device="cpu")
    pin_numerics(settings.threads)  # as the server's lifespan does before loading
    verified = verify_version(name, number, repository / name / str(number), settings, Metrics(None))
    if isinstance(verified, Refusal):
        raise ClientError(f"model {name!r} version {number} refused: {verified.reason}", 1)
    manifest, executor = verified.manifest, verified.executor
    model = ModelInput(manifest.input.shape, manifest.input.feature_names, manifest.class_labels)
    served = ServedVersion(name, str(number), executor.chunk_rows, verified.numerics.fingerprint, model)

    def run(rows: Float32Array) -> tuple[Int64Array, Float32Array]:
        outputs = executor.run(rows)
        return outputs.class_index, outputs.probabilities

    return served, run


def _version_of(model_dir: Path, version: str | None) -> int:
    """--version, else the version labelled stable, else the highest: what a server's unversioned route gets."""
    if version is not None:
        number = parse_version(version)
        if number is None:
            raise ClientError(f"--version must be a version number, got {version!r}")
        return number
    try:
        stable = (read_labels(model_dir) or {}).get(STABLE) if model_dir.is_dir() else None
    except LabelsError as exc:
        raise ClientError(f"{model_dir}: {exc}") from None
    if stable is not None:
        return stable
    numbers = [parse_version(entry.name) for entry in model_dir.iterdir()] if model_dir.is_dir() else []
    versions = [n for n in numbers if n is not None]
    if not versions:
        raise ClientError(f"--local: no model {model_dir.name!r} with versions in {model_dir.parent}")
    return max(versions)

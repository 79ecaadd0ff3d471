"""The loader: a version directory becomes either a ready `ServedModel` or a `Refusal` with its reason.

Flow: checkpoint (models/) -> verify weights -> eval() -> executor -> inference-mode checks -> self-test ->
batcher. Runs off the event loop (the registry calls it in a thread). The directory's fingerprint (file
names, sizes, mtimes) is taken before and after: files that change while they are read refuse the version
for now, and the registry retries it once the fingerprint moves again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import CheckpointError, IgnoredEntry, Manifest, list_model_dirs, load_checkpoint, scan_versions
from models.checkpoint import NAME_PATTERN, read_manifest
from models.imported import ImportedConfig
from service.batcher import Batcher
from service.executor import Executor
from service.executor_factory import build_executor
from service.metrics import Metrics
from service.numerics import NumericsFingerprint, environment_report, numerics_fingerprint
from service.selftest import SelfTestReport, run_self_test
from service.settings import Settings
from service.verify import ModelRefused, check_fingerprint, check_inference_mode, check_weights

log = logging.getLogger("invariant.registry")
Fingerprint = tuple[tuple[str, int, int], ...]  # (file name, size, mtime_ns) of each file, sorted
# One load at a time per process: building a model draws from torch's global RNG, and the inference-mode
# check proves a forward pass leaves that RNG alone, so two loads at once would refuse each other.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A version that passed every check and serves; immutable, so a request holds one consistent view."""

    name: str
    version: int
    path: Path
    fingerprint: Fingerprint
    manifest: Manifest
    batcher: Batcher
    self_test: SelfTestReport
    environment: dict[str, Any]
    executor: dict[str, Any]  # the executor's describe(): kind, device, dtype, C
    numerics: NumericsFingerprint  # X-Numerics-Fingerprint
    replica: str  # who answers: X-Replica

    @property
    def sha256(self) -> str:
        return self.manifest.weights_sha256


@dataclass(frozen=True)
class Refusal:
    """Why a version does not serve; retried only once its files change (`fingerprint` differs)."""

    reason: str
    fingerprint: Fingerprint


def fingerprint(path: Path) -> Fingerprint:
    """What identifies the directory's current contents without reading them: cheap enough to poll."""
    entries: list[tuple[str, int, int]] = []
    try:
        with os.scandir(path) as listing:
            for entry in listing:
                if entry.is_file(follow_symlinks=True):
                    stat = entry.stat()
                    entries.append((entry.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(entries))


def load_version(
    name: str,
    version: int,
    path: Path,
    settings: Settings,
    metrics: Metrics,
    executor_factory: Callable[[Executor], Executor] | None = None,
    on_failure: Callable[[str], None] | None = None,
) -> ServedModel | Refusal:
    """`executor_factory` (bench only) wraps the executor that passed the self-test into the one that serves;
    `on_failure(reason)` is called (on the compute thread) if the batcher's compute thread dies."""
    before = fingerprint(path)
    started = time.perf_counter()
    with _LOAD_LOCK:
        try:
            checked: _Checked | Refusal = _check(name, version, path, settings, metrics)
        except (CheckpointError, ModelRefused) as exc:
            checked = Refusal(_without_paths(str(exc), path, name, version), before)
        except Exception as exc:  # an unexpected failure refuses this version, never the server
            log.exception("loading %s failed", path)
            checked = Refusal(_without_paths(f"internal error while loading: {exc!r}", path, name, version), before)
    if isinstance(checked, _Checked) and fingerprint(path) != before:
        checked = Refusal("files changed while they were read; retried when they change again", before)
    _record(metrics, name, version, checked, time.perf_counter() - started)
    if isinstance(checked, Refusal):
        return checked
    executor = checked.executor if executor_factory is None else executor_factory(checked.executor)
    labels = (name, str(version))
    delay_s = settings.max_queue_delay_ms / 1000
    batcher = Batcher(executor, labels, metrics, settings.max_queue_rows, delay_s, settings.audit_fraction, on_failure)
    batcher.start()
    log.info(
        "model %s version %d ready (sha256 %s, self-test %s in %.2f s)",
        name, version, checked.manifest.weights_sha256[:12], checked.self_test.summary(), checked.self_test.seconds,
    )  # fmt: skip
    return ServedModel(
        name, version, path, before, checked.manifest, batcher, checked.self_test, checked.environment,
        executor.describe(), checked.numerics, settings.replica_name or socket.gethostname(),
    )  # fmt: skip


def _without_paths(reason: str, path: Path, name: str, version: int) -> str:
    """Reasons reach clients: they name the model's files, never where the server keeps them."""
    for spelling in {str(path.resolve()), str(path)}:
        reason = reason.replace(spelling, f"{name}/{version}")
    return reason


@dataclass(frozen=True)
class _Checked:
    manifest: Manifest
    executor: Executor
    self_test: SelfTestReport
    environment: dict[str, Any]
    numerics: NumericsFingerprint


def _check(name: str, version: int, path: Path, settings: Settings, metrics: Metrics) -> _Checked:
    """The version loaded, verified and self-tested; raises CheckpointError or ModelRefused with the reason."""
    manifest = read_manifest(path)
    if isinstance(manifest.architecture, ImportedConfig):  # a user's graph file: inference mode proven from it
        from service.executor_onnx import load_onnx_executor  # onnxruntime only where a model needs it

        executor = load_onnx_executor(path, manifest, settings)
    else:
        model, manifest = load_checkpoint(path)
        check_weights(model)
        model.eval().requires_grad_(False)  # inference only: no autograd state, no training-mode layers
        executor = build_executor(model, manifest, settings)
        seed = settings.self_test_seed
        check_inference_mode(executor.model, executor.input_shape, executor.device, executor.dtype, seed)
    environment = environment_report(executor.device)
    self_test = run_self_test(executor, settings.self_test_seed)
    labels = (name, str(version))
    metrics.self_test_passed.labels(*labels).set(1 if self_test.passed else 0)
    metrics.self_test_cases.labels(*labels).set(self_test.cases)
    if not self_test.passed:
        raise ModelRefused(f"self-test {self_test.summary()}")
    numerics = numerics_fingerprint(executor.describe(), executor.device)
    check_fingerprint(numerics.fingerprint, numerics.parts, settings.expect_fingerprint)
    return _Checked(manifest, executor, self_test, environment, numerics)


def _record(metrics: Metrics, name: str, version: int, result: _Checked | Refusal, seconds: float) -> None:
    outcome = "refused" if isinstance(result, Refusal) else "ready"
    metrics.loads.labels(name, outcome).inc()
    metrics.load_seconds.labels(name).observe(seconds)
    if isinstance(result, Refusal):
        log.error("model %s version %d REFUSED: %s", name, version, result.reason)


@dataclass(frozen=True)
class ModelDir:
    """One model directory as a scan saw it: version number -> fingerprint, and the ignored directories."""

    versions: dict[int, Fingerprint]
    ignored: tuple[IgnoredEntry, ...]


EMPTY_MODEL_DIR = ModelDir({}, ())


def scan_model(repository: Path, name: str) -> ModelDir:
    if not NAME_PATTERN.match(name):
        return EMPTY_MODEL_DIR
    versions, ignored = scan_versions(repository, name)
    return ModelDir({number: fingerprint(path) for number, path in versions.items()}, tuple(ignored))


def scan_repository(repository: Path) -> dict[str, ModelDir]:
    """Every model directory: a listing and a stat per file, so it is cheap enough to run every poll."""
    return {name: scan_model(repository, name) for name in list_model_dirs(repository)}

"""The loader: a version directory becomes either a `Verified` model or a `Refusal` with its reason.

Flow: checkpoint (models/) -> verify weights -> eval() -> executor -> inference-mode checks -> self-test.
A pure function of the directory and the settings: it starts no thread (the registry turns a `Verified`
into a `ServedModel` by starting its batcher). Runs off the event loop (the registry calls it in a thread).
The directory's stamp (file names, sizes, mtimes) is taken before and after: files that change while they
are read refuse the version for now, and the registry retries it once the stamp moves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import CheckpointError, IgnoredEntry, Manifest, list_model_dirs, load_checkpoint, scan_versions
from models.checkpoint import read_manifest, sha256_of
from models.imported import ImportedConfig
from models.labels import LabelsError, read_labels
from models.versions import is_model_name
from service.engine.batcher import Batcher
from service.engine.calibration import best_chunk_seconds, choose_placement
from service.engine.executor_factory import build_executor
from service.engine.numerics import NumericsFingerprint, environment_report, numerics_fingerprint
from service.engine.types import Executor
from service.guarantee.selftest import SelfTestReport
from service.guarantee.shape import prove_pair, prove_shape
from service.guarantee.verify import ModelRefused, check_fingerprint, check_inference_mode, check_weights
from service.observability.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("invariant.registry")
DirStamp = tuple[tuple[str, int, int], ...]  # (file name, size, mtime_ns) of each file, sorted
# One load at a time per process: building a model draws from torch's global RNG, and the inference-mode
# check proves a forward pass leaves that RNG alone, so two loads at once would refuse each other.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A version that passed every check and serves; immutable, so a request holds one consistent view."""

    name: str
    version: int
    path: Path
    stamp: DirStamp
    manifest: Manifest
    batcher: Batcher
    self_test: SelfTestReport
    environment: dict[str, Any]
    execution: dict[str, Any]  # the executor's describe(): kind, device, dtype, C
    numerics: NumericsFingerprint  # X-Numerics-Fingerprint
    content: str = ""  # content_of(path) when it loaded: a changed stamp with the same content is no change

    @property
    def sha256(self) -> str:
        return self.manifest.weights_sha256


@dataclass(frozen=True)
class Refusal:
    """Why a version does not serve; retried only once its files change (`stamp` differs)."""

    reason: str
    stamp: DirStamp


@dataclass(frozen=True)
class Verified:
    """A version that passed every check, with the executor that passed them; not serving yet."""

    name: str
    version: int
    path: Path
    stamp: DirStamp
    manifest: Manifest
    executor: Executor
    self_test: SelfTestReport
    environment: dict[str, Any]
    numerics: NumericsFingerprint
    forward_s: float  # the best of a few C-row forwards, measured after the self-test: decides placement
    shape: dict[str, Any]  # preferred C, chosen C (the executor's) and why
    content: str  # content_of(path): what the files held when they were checked


def stamp_of(path: Path) -> DirStamp:
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


def content_of(path: Path) -> str:
    """sha256 over the name and sha256 of every regular file of the version directory (a FIFO or device
    there gives a digest that matches nothing). Compared when only the stamp moved (`touch manifest.json`)."""
    digest = hashlib.sha256()
    for file_name, _, _ in stamp_of(path):
        try:
            file_sha = sha256_of(path / file_name)
        except OSError as exc:
            file_sha = f"unreadable: {exc.strerror}"
        digest.update(f"{file_name}\0{file_sha}\n".encode())
    return digest.hexdigest()


async def verify_within(
    name: str, version: int, path: Path, settings: Settings, metrics: Metrics, stamp: DirStamp
) -> Verified | Refusal:
    """verify_version on a daemon thread of its own, refused once it takes over `load_timeout_s`: a load
    that hangs (a file system that never answers) neither holds up start-up or shutdown nor keeps the
    process alive at exit. The thread is left to finish; its result is dropped."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[Verified | Refusal] = loop.create_future()

    def settle(outcome: Verified | Refusal | None, error: BaseException | None) -> None:
        if not result.done():
            result.set_exception(error) if error is not None else result.set_result(outcome)  # type: ignore[arg-type]

    def run() -> None:
        try:
            outcome, error = verify_version(name, version, path, settings, metrics), None
        except BaseException as exc:  # handed to the loop, raised there
            outcome, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, outcome, error)

    threading.Thread(target=run, name=f"load {name}/{version}", daemon=True).start()
    try:
        return await asyncio.wait_for(result, settings.load_timeout_s)
    except TimeoutError:
        reason = f"load did not finish within --load-timeout-s {settings.load_timeout_s:g} s"
        log.error("model %s version %d REFUSED: %s", name, version, reason)
        return Refusal(reason, stamp)


def verify_version(name: str, version: int, path: Path, settings: Settings, metrics: Metrics) -> Verified | Refusal:
    before = stamp_of(path)
    started = time.perf_counter()
    if not _LOAD_LOCK.acquire(timeout=settings.load_timeout_s):  # a hung load holds it: refuse, never queue
        return Refusal(f"another load held the loader for over {settings.load_timeout_s:g} s", before)
    content = ""
    try:
        checked: _Checked | Refusal = _check(name, version, path, settings, metrics)
        content = content_of(path) if isinstance(checked, _Checked) else ""
    except (CheckpointError, ModelRefused) as exc:
        checked = Refusal(_without_paths(str(exc), path, name, version), before)
    except Exception as exc:  # an unexpected failure refuses this version, never the server
        log.exception("loading %s failed", path)
        checked = Refusal(_without_paths(f"internal error while loading: {exc!r}", path, name, version), before)
    finally:
        _LOAD_LOCK.release()
    if isinstance(checked, _Checked) and stamp_of(path) != before:
        checked = Refusal("files changed while they were read; retried when they change again", before)
    _record(metrics, name, version, checked, time.perf_counter() - started)
    if isinstance(checked, Refusal):
        return checked
    return Verified(
        name, version, path, before, checked.manifest, checked.executor, checked.self_test, checked.environment,
        checked.numerics, best_chunk_seconds(checked.executor), checked.shape, content,
    )  # fmt: skip


def start_serving(
    verified: Verified, settings: Settings, metrics: Metrics, on_failure: Callable[[str], None] | None = None
) -> ServedModel:
    """Start the verified version's batcher (its compute thread); `on_failure(reason)` is called on that
    thread if it dies. Called by the registry, which stops every batcher it started."""
    labels = (verified.name, str(verified.version))
    delay_s = settings.max_queue_delay_ms / 1000
    placement = choose_placement(settings.placement, verified.forward_s, settings.loop_forward_bound_ms)
    batcher = Batcher(
        verified.executor, labels, metrics, settings.max_queue_rows, delay_s, settings.audit_fraction, on_failure,
        placement,
    )  # fmt: skip
    batcher.start()
    log.info(
        "model %s version %d ready (sha256 %s, self-test %s in %.2f s, %.3f ms per %d-row forward: %s placement)",
        verified.name, verified.version, verified.manifest.weights_sha256[:12], verified.self_test.summary(),
        verified.self_test.seconds, verified.forward_s * 1000, verified.executor.chunk_rows, placement,
    )  # fmt: skip
    execution = {
        **verified.executor.describe(),
        **verified.shape,
        "placement": placement,
        "forward_ms": verified.forward_s * 1000,
    }
    return ServedModel(
        verified.name, verified.version, verified.path, verified.stamp, verified.manifest, batcher,
        verified.self_test, verified.environment, execution, verified.numerics, verified.content,
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
    shape: dict[str, Any]  # preferred C, chosen C and why (metadata, repository index)


def _check(name: str, version: int, path: Path, settings: Settings, metrics: Metrics) -> _Checked:
    """The version loaded, verified and self-tested; raises CheckpointError or ModelRefused with the reason."""
    manifest = read_manifest(path)
    if isinstance(manifest.architecture, ImportedConfig):  # a user's graph file: inference mode proven from it
        if manifest.architecture.arch == "pt2":
            from service.engine.executor_pt2 import load_pt2_executor

            build, preferred = load_pt2_executor(path, manifest, settings)
        else:
            from service.engine.executor_onnx import load_onnx_executor  # onnxruntime only where a model needs it

            build, preferred = load_onnx_executor(path, manifest, settings)
    else:
        build, preferred, manifest = _checkpoint_executor(path, settings)
    environment = environment_report(preferred.device)
    proof = prove_shape(build, preferred.chunk_rows, settings.strict_chunk_rows, settings.self_test_seed)
    labels = (name, str(version))
    metrics.self_test_passed.labels(*labels).set(1 if proof.passed else 0)
    metrics.self_test_cases.labels(*labels).set(proof.self_test.cases)
    if not proof.passed:
        tried = "; ".join(f"C = {c}: {summary}" for c, summary in proof.tried[1:])
        also = f"; no other C passed either ({tried})" if tried else ""
        raise ModelRefused(f"self-test {proof.self_test.summary()} at C = {proof.preferred}{also}")
    if proof.chosen != proof.preferred:
        log.warning("model %s version %d: %s", name, version, proof.reason)
    pair = prove_pair(build, proof.executor, settings.small_chunk_rows, settings.self_test_seed)
    log.info("model %s version %d: shape pair %s", name, version, pair.reason)
    executor = pair.executor
    numerics = numerics_fingerprint(executor.describe(), executor.device)  # of the chosen C (and C_small)
    check_fingerprint(numerics.fingerprint, numerics.parts, settings.expect_fingerprint)
    shape = {"chunk_rows_preferred": proof.preferred, "chunk_rows_reason": proof.reason, **pair.describe()}
    return _Checked(manifest, executor, proof.self_test, environment, numerics, shape)


def _checkpoint_executor(path: Path, settings: Settings) -> tuple[Callable[[int], Executor], Executor, Manifest]:
    """One of our checkpoints, loaded and checked: build(C) -> its executor at C, the preferred executor."""
    model, manifest = load_checkpoint(path)
    check_weights(model)
    model.eval().requires_grad_(False)  # inference only: no autograd state, no training-mode layers
    preferred = build_executor(model, manifest, settings)
    check_inference_mode(
        preferred.model, preferred.input_shape, preferred.device, preferred.dtype, settings.self_test_seed
    )

    def build(chunk_rows: int) -> Executor:
        return (
            preferred if chunk_rows == preferred.chunk_rows else build_executor(model, manifest, settings, chunk_rows)
        )

    return build, preferred, manifest


def _record(metrics: Metrics, name: str, version: int, result: _Checked | Refusal, seconds: float) -> None:
    outcome = "refused" if isinstance(result, Refusal) else "ready"
    metrics.loads.labels(name, outcome).inc()
    metrics.load_seconds.labels(name).observe(seconds)
    if isinstance(result, Refusal):
        log.error("model %s version %d REFUSED: %s", name, version, result.reason)


@dataclass(frozen=True)
class ModelDir:
    """One model directory as a scan saw it: version number -> stamp, the ignored directories, and its
    labels.json (None: no file; `labels_problem` says why a file present could not be used)."""

    versions: dict[int, DirStamp]
    ignored: tuple[IgnoredEntry, ...]
    labels: dict[str, int] | None = None
    labels_problem: str = ""


EMPTY_MODEL_DIR = ModelDir({}, ())


def scan_model(repository: Path, name: str) -> ModelDir:
    if not is_model_name(name):
        return EMPTY_MODEL_DIR
    versions, ignored = scan_versions(repository, name)
    stamps = {number: stamp_of(path) for number, path in versions.items()}
    try:
        labels = read_labels(Path(repository) / name)
    except LabelsError as exc:
        return ModelDir(stamps, tuple(ignored), None, str(exc))
    return ModelDir(stamps, tuple(ignored), labels)


def scan_repository(repository: Path) -> dict[str, ModelDir]:
    """Every model directory: a listing and a stat per file, so it is cheap enough to run every poll."""
    return {name: scan_model(repository, name) for name in list_model_dirs(repository)}

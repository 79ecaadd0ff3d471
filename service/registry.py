"""The models this process serves: every version in the repository, each loaded, verified, self-tested.

Flow per version: checkpoint (models/) -> verify weights -> eval() -> executor -> inference-mode checks ->
self-test -> batcher. Any failure refuses that version with a reason; other versions and models serve on.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models import CheckpointError, Manifest, list_model_names, list_versions, load_checkpoint
from service.batcher import Batcher
from service.errors import NotFound, NotReady
from service.executor import Executor
from service.executor_factory import build_executor
from service.inputs import ascii_int
from service.metrics import Metrics
from service.numerics import environment_report
from service.selftest import SelfTestReport, run_self_test
from service.settings import Settings
from service.verify import ModelRefused, check_inference_mode, check_weights

log = logging.getLogger("invariant.registry")
# Bench only, reachable from code (create_app) and never from settings: wraps the executor that passed the
# self-test into the one that serves (the bench's variable-shape comparison). A failed self-test refuses the
# model before this is ever called.
ServingExecutorFactory = Callable[[Executor], Executor]


@dataclass
class ServedModel:
    name: str
    version: int
    path: Path
    state: str = "loading"  # loading | ready | refused
    reason: str = ""
    manifest: Manifest | None = None
    batcher: Batcher | None = None
    self_test: SelfTestReport | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    executor: dict[str, Any] = field(default_factory=dict)  # the executor's describe(): kind, device, dtype, C

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def sha256(self) -> str:
        return self.manifest.weights_sha256 if self.manifest else ""


class ModelRegistry:
    def __init__(
        self, settings: Settings, metrics: Metrics, executor_factory: ServingExecutorFactory | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor_factory = executor_factory
        self._models: dict[str, dict[int, ServedModel]] = {}

    def discover(self) -> None:
        """List every version in the repository (state 'loading'); cheap, so the routes know all names."""
        root = self.settings.repository
        for name in list_model_names(root):
            self._models[name] = {v: ServedModel(name, v, root / name / str(v)) for v in list_versions(root, name)}
        if not self._models:
            log.warning("no models found in repository %s", root)

    def load_all(self) -> None:
        try:
            for versions in self._models.values():
                for served in versions.values():
                    self._load(served)
        finally:
            # Everything alive now (torch, the models, the app) lives as long as the process: move it out of
            # the collector's reach. Otherwise each full collection walks ~200k objects, ~190 ms on this
            # machine, during which no request is answered (the p99 at 64 connections).
            gc.collect()
            gc.freeze()

    def stop(self) -> None:
        for served in self.all():
            if served.batcher is not None:
                served.batcher.stop()

    def all(self) -> list[ServedModel]:
        return [served for versions in self._models.values() for served in versions.values()]

    def names(self) -> list[str]:
        return sorted(self._models)

    def has(self, name: str) -> bool:
        return name in self._models

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The named version, or the latest (highest) one; NotFound when either is unknown."""
        versions = self._models.get(name)
        if not versions:
            raise NotFound(f"unknown model {name!r}; available: {self.names()}")
        if version is None:
            return versions[max(versions)]
        number = ascii_int(version)
        if number is None or number not in versions:
            raise NotFound(f"model {name!r} has no version {version!r}; available: {sorted(versions)}")
        return versions[number]

    def get_ready(self, name: str, version: str | None = None) -> ServedModel:
        served = self.get(name, version)
        if served.state == "loading":
            raise NotReady(f"model {name!r} version {served.version} is still loading")
        if not served.ready:
            raise NotReady(f"model {name!r} version {served.version} is not served: {served.reason}")
        return served

    def _load(self, served: ServedModel) -> None:
        labels = (served.name, str(served.version))
        try:
            self._load_verified(served)
        except (CheckpointError, ModelRefused) as exc:
            self._refuse(served, str(exc))
        except Exception as exc:  # an unexpected failure refuses this model, never the server
            log.exception("loading %s failed", served.path)
            self._refuse(served, f"internal error while loading: {exc!r}")
        self.metrics.model_ready.labels(*labels).set(1 if served.ready else 0)
        if served.self_test is not None:
            self.metrics.self_test_passed.labels(*labels).set(1 if served.self_test.passed else 0)
            self.metrics.self_test_cases.labels(*labels).set(served.self_test.cases)

    def _load_verified(self, served: ServedModel) -> None:
        settings = self.settings
        model, manifest = load_checkpoint(served.path)
        served.manifest = manifest
        check_weights(model)
        model.eval().requires_grad_(False)  # inference only: no autograd state, no training-mode layers
        executor = build_executor(model, manifest, settings)
        check_inference_mode(
            executor.model, executor.input_shape, executor.device, executor.dtype, settings.self_test_seed
        )
        served.environment = environment_report(executor.device)
        served.self_test = run_self_test(executor, settings.self_test_seed)
        if not served.self_test.passed:
            raise ModelRefused(f"self-test {served.self_test.summary()}")
        if self.executor_factory is not None:
            executor = self.executor_factory(executor)
        served.executor = executor.describe()  # what serves
        served.batcher = Batcher(
            executor,
            (served.name, str(served.version)),
            self.metrics,
            settings.max_queue_rows,
            settings.max_queue_delay_ms / 1000,
            settings.audit_fraction,
        )
        served.batcher.start()
        served.state = "ready"
        log.info(
            "model %s version %d ready (sha256 %s, self-test %s in %.2f s)",
            served.name, served.version, manifest.weights_sha256[:12], served.self_test.summary(),
            served.self_test.seconds,
        )  # fmt: skip

    def _refuse(self, served: ServedModel, reason: str) -> None:
        served.state, served.reason = "refused", reason
        log.error("model %s version %d REFUSED: %s", served.name, served.version, reason)

"""The one path from decoded rows to outputs: find the ready model, queue its rows, count the outcome."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from service.errors import ServiceError
from service.executor import Float32Array, Outputs
from service.metrics import Metrics
from service.registry import ModelRegistry, ServedModel
from service.settings import Settings


@dataclass
class _Call:
    name: str
    version: str
    status: int = 200


class Inference:
    def __init__(self, registry: ModelRegistry, settings: Settings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics

    async def predict(
        self,
        protocol: str,
        name: str,
        version: str | None,
        decode: Callable[[ServedModel], Float32Array],
    ) -> tuple[ServedModel, Outputs]:
        """decode(model) -> rows (N, *input_shape); returns the model that answered and its N outputs."""
        async with self._observed(protocol, name, version) as call:
            served = self.registry.get_ready(name, version)
            call.version = str(served.version)
            rows = decode(served)
            assert served.batcher is not None
            return served, await served.batcher.submit(rows, self.settings.request_timeout_s)

    @asynccontextmanager
    async def _observed(self, protocol: str, name: str, version: str | None) -> AsyncIterator[_Call]:
        # Unknown names are counted under one label so that random URLs cannot grow the series without bound.
        known = self.registry.has(name)
        call = _Call(name if known else "<unknown>", version if known and version else "")
        started = time.perf_counter()
        try:
            yield call
        except ServiceError as exc:
            call.status = exc.status_code
            raise
        except Exception:
            call.status = 500
            raise
        finally:
            self.metrics.requests.labels(call.name, call.version, protocol, str(call.status)).inc()
            self.metrics.request_seconds.labels(call.name, call.version, protocol).observe(
                time.perf_counter() - started
            )

"""The one path from decoded rows to outputs: find the ready model, queue its rows, count the outcome."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import ServiceError
from service.executor import Float32Array, Outputs
from service.loader import ServedModel
from service.metrics import Metrics
from service.registry import ModelRegistry
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
        self._counters: dict[tuple[str, str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str, str], Any] = {}

    async def predict(
        self,
        protocol: str,
        name: str,
        version: str | None,
        decode: Callable[[ServedModel], Float32Array],
    ) -> tuple[ServedModel, Outputs]:
        """decode(model) -> rows (N, *input_shape); returns the model that answered and its N outputs."""
        # Inline rather than an async context manager: this runs once per request. Unknown names are counted
        # under one label so that random URLs cannot grow the series without bound.
        known = self.registry.has(name)
        call = _Call(name if known else "<unknown>", version if known and version else "")
        started = time.perf_counter()
        try:
            served = self.registry.get_ready(name, version)
            call.version = str(served.version)
            rows = decode(served)
            # No await between the lookup and the enqueue: a version retired meanwhile still has these rows.
            return served, await served.batcher.submit(rows, self.settings.request_timeout_s)
        except ServiceError as exc:
            call.status = exc.status_code
            raise
        except Exception:
            call.status = 500
            raise
        finally:
            self._record(call, protocol, time.perf_counter() - started)

    def _record(self, call: _Call, protocol: str, seconds: float) -> None:
        key = (call.name, call.version, protocol)
        histogram = self._histograms.get(key)
        if histogram is None:
            histogram = self._histograms[key] = self.metrics.request_seconds.labels(*key)
        histogram.observe(seconds)
        counter_key = (*key, str(call.status))
        counter = self._counters.get(counter_key)
        if counter is None:
            counter = self._counters[counter_key] = self.metrics.requests.labels(*counter_key)
        counter.inc()

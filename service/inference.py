"""The one path from decoded rows to outputs: find the ready model, queue its rows, count the outcome."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import ServiceError
from service.executor import Float32Array, Outputs
from service.http import OFFLOAD_BYTES
from service.loader import ServedModel
from service.metrics import Metrics
from service.registry import ModelRegistry
from service.settings import Settings
from service.snapshot import NotServing

UNKNOWN_NAME = "<unknown>"
UNKNOWN_VERSION = "unknown"


@dataclass(frozen=True)
class Admission:
    """What is known of a request before its rows are decoded."""

    body_bytes: int
    # model -> rows the request holds, from its own structure (V1 instance count, V2 shape[0]), if known
    declared_rows: Callable[[ServedModel], int | None]


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
        request: Admission,
    ) -> tuple[ServedModel, Outputs]:
        """decode(model) -> rows (N, *input_shape); returns the model that answered and its N outputs."""
        # Inline rather than an async context manager: this runs once per request. Labels hold only values
        # the server defines (known names and versions, else one fixed bucket), so random URLs cannot grow
        # the series without bound.
        call = _Call(name if self.registry.has(name) else UNKNOWN_NAME, UNKNOWN_VERSION)
        started = time.perf_counter()
        try:
            found = self.registry.find(name, version)
            call.version = str(found.version)
            if isinstance(found, NotServing):
                raise found.error()
            declared = request.declared_rows(found)
            if declared is not None:  # refuse before decoding what could never be queued
                found.batcher.admit(declared)
            if request.body_bytes < OFFLOAD_BYTES:
                rows = decode(found)
            else:  # a large decode runs beside the event loop, which keeps answering other clients
                rows = await asyncio.to_thread(decode, found)
                found = self._still_serving(found, name, version)
            # No await between the lookup and the enqueue: a version retired meanwhile still has these rows.
            return found, await found.batcher.submit(rows, self.settings.request_timeout_s)
        except ServiceError as exc:
            call.status = exc.status_code
            raise
        except Exception:
            call.status = 500
            raise
        finally:
            self._record(call, protocol, time.perf_counter() - started)

    def _still_serving(self, decoded_for: ServedModel, name: str, version: str | None) -> ServedModel:
        """The version to queue on after an awaited decode: the one now served (a reload may have replaced
        it meanwhile) if its input shape is the same, else the one the rows were decoded for."""
        current = self.registry.find(name, version)
        if isinstance(current, ServedModel) and current.manifest.input.shape == decoded_for.manifest.input.shape:
            return current
        return decoded_for

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

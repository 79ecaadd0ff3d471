"""The one path from a parsed request to outputs, shared by every transport: find the ready model, admit
its rows, decode them against the model's input, queue them, check the outputs.

Transports (the HTTP dispatcher, the gRPC servicer) call `infer` with an `InferRequest` their codec built
and a `CallRecord` they count once their answer is sent, so the status in the metrics is the status the
client got. Nothing here calls back into a protocol.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np

from service.dataplane.offload import OFFLOAD_BYTES, beside_loop_if
from service.dataplane.requests import InferRequest
from service.engine.types import Float32Array, Outputs
from service.errors import UnprocessableEntity
from service.lifecycle.loader import ServedModel
from service.lifecycle.registry import ModelRegistry
from service.lifecycle.snapshot import IndexEntry, NotServing
from service.settings import Settings

UNKNOWN_NAME = "<unknown>"  # metric label for a name no model has: labels never hold raw client input
UNKNOWN_VERSION = "unknown"


@dataclass
class CallRecord:
    """What the metrics say about one inference call; filled in as the call learns it."""

    protocol: str  # a value the server defines: "v1", "v2", "grpc"
    name: str = UNKNOWN_NAME
    version: str = UNKNOWN_VERSION


@dataclass(frozen=True)
class Answer:
    """The outputs of one request's N rows and the model version that computed every one of them."""

    model: ServedModel
    outputs: Outputs

    @property
    def rows(self) -> int:
        return int(self.outputs.class_index.shape[0])


class DataPlane:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self.registry = registry
        self.request_timeout_s = settings.request_timeout_s
        self.replica = settings.replica_name or socket.gethostname()  # who answers: X-Replica, gRPC parameter

    # --- inference ----------------------------------------------------------------------------------------

    def call_record(self, protocol: str, name: str) -> CallRecord:
        """A transport's record of a call to model `name`, made before its request is parsed, so even a
        refused request is counted under the model it named, if that model exists."""
        return CallRecord(protocol, name if self.registry.has(name) else UNKNOWN_NAME)

    async def infer(self, request: InferRequest, call: CallRecord) -> Answer:
        found = self.registry.find(request.model, request.version)
        call.version = str(found.version)
        if isinstance(found, NotServing):
            raise found.error()
        declared = request.rows.declared_rows
        if declared is not None:  # refuse what could never be queued before decoding it
            found.batcher.admit(declared)
        large = request.wire_bytes >= OFFLOAD_BYTES
        rows = await beside_loop_if(large, request.rows.decode, found.manifest.input)
        if large:  # the loop ran meanwhile: a reload may have replaced the version
            found = self._still_serving(found, request)
            call.version = str(found.version)
        # No await between the lookup and the enqueue: a version retired meanwhile still has these rows.
        outputs = await found.batcher.submit(rows, self.request_timeout_s)
        _refuse_non_finite(outputs.logits)
        return Answer(found, outputs)

    def _still_serving(self, decoded_for: ServedModel, request: InferRequest) -> ServedModel:
        """The version now served if its input is the same as the one the rows were decoded for."""
        current = self.registry.find(request.model, request.version)
        if isinstance(current, ServedModel) and current.manifest.input.shape == decoded_for.manifest.input.shape:
            return current
        return decoded_for

    # --- what clients may know: model state and the repository --------------------------------------------

    def find(self, name: str, version: str | None = None) -> ServedModel | NotServing:
        return self.registry.find(name, version)

    def names(self) -> list[str]:
        return self.registry.names()

    def versions(self, name: str) -> list[int]:
        return self.registry.versions(name)

    def any_ready(self) -> bool:
        return self.registry.any_ready()

    async def index(self, ready_only: bool) -> list[IndexEntry]:
        return await self.registry.index(ready_only)

    async def load(self, name: str) -> list[int]:
        return await self.registry.load(name)

    async def unload(self, name: str) -> None:
        await self.registry.unload(name)


def _refuse_non_finite(logits: Float32Array) -> None:
    """Finite inputs can still overflow inside the model (64 x 3.4e38): NaN logits would give every class
    probability NaN and label 0 with status 200. A 422 naming the rows instead, never a confident label."""
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if bad.size:
        shown = ", ".join(str(i) for i in bad[:5].tolist()) + (", ..." if bad.size > 5 else "")
        raise UnprocessableEntity(
            f"the model's output is not finite for row(s) {shown} ({bad.size} of {logits.shape[0]}): "
            "the input values are too large for this model"
        )

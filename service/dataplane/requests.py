"""Typed, protocol-neutral inference requests: what a codec hands the data plane once the whole request
parsed and validated. Only checks that need the model (the input's shape and feature names) remain, and
they run in `decode`, a pure function of the request and the model's input spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models import InputSpec, Manifest
from service.dataplane.rows import rows_from_bytes, rows_from_flat, rows_from_instances
from service.engine.types import Float32Array


@dataclass(frozen=True)
class NestedRows:
    """KServe V1 "instances": a list of rows, each nested lists of numbers or an object keyed by feature."""

    instances: list[Any]

    @property
    def declared_rows(self) -> int:
        return len(self.instances)

    def decode(self, spec: InputSpec) -> Float32Array:
        return rows_from_instances(self.instances, spec.shape, spec.feature_names, spec.preprocessing)


@dataclass(frozen=True)
class FlatTensor:
    """A tensor given as (possibly nested) JSON numbers with its shape: V2 "data"."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any

    @property
    def declared_rows(self) -> int | None:
        return self.shape[0] if self.shape and self.shape[0] > 0 else None

    def decode(self, spec: InputSpec) -> Float32Array:
        return rows_from_flat(self.data, self.shape, spec.shape, f"input {self.name!r}", self.datatype)


@dataclass(frozen=True)
class RawTensor:
    """A tensor given as little-endian bytes with its shape: V2 binary data, gRPC raw contents."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes

    @property
    def declared_rows(self) -> int | None:
        return self.shape[0] if self.shape and self.shape[0] > 0 else None

    def decode(self, spec: InputSpec) -> Float32Array:
        return rows_from_bytes(self.raw, self.datatype, self.shape, spec.shape, f"input {self.name!r}")


RowSource = NestedRows | FlatTensor | RawTensor


@dataclass(frozen=True)
class InferRequest:
    model: str
    version: str | None  # None: the version unversioned traffic gets
    rows: RowSource
    wire_bytes: int  # the request's size as received: large ones decode beside the event loop
    receipts: bool = False  # the client asked for a signed receipt per row (service/receipts/)
    request_id: str | None = None  # the client's id (V2 "id"), named in receipts; None: the server makes one
    outputs: tuple[str, ...] = ()  # output names the client asked for by name (checked before compute)
    label: str | None = None  # a version label (labels.json), instead of a version; checked by the codec


CLASSIFIER_OUTPUTS = ("logits", "probabilities", "class_index", "label")
REGRESSION_OUTPUTS = ("value", "logits")


def output_names(manifest: Manifest) -> tuple[str, ...]:
    """The outputs a model answers, by the name every protocol uses for them."""
    return REGRESSION_OUTPUTS if manifest.task == "regression" else CLASSIFIER_OUTPUTS

"""The data plane, protocol-neutral: what every transport (HTTP today, gRPC next) calls once its codec has
parsed and validated a whole request into an `InferRequest`. It finds the model, admits the rows to its
queue, decodes them against the model's input, waits for the engine's outputs and returns them with the
model that answered. The rules of what a row may be (rows.py) live here, so every protocol shares them;
the one offload policy (offload.py) decides which work runs beside the event loop."""

from service.dataplane.plane import Answer, CallRecord, DataPlane
from service.dataplane.requests import FlatTensor, InferRequest, NestedRows, RawTensor, RowSource

__all__ = [
    "Answer",
    "CallRecord",
    "DataPlane",
    "FlatTensor",
    "InferRequest",
    "NestedRows",
    "RawTensor",
    "RowSource",
]

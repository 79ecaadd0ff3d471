"""KServe V1 protocol: `POST /v1/models/{name}:predict` with {"instances": [row, ...]}, each row a list of
numbers or an object keyed by the model's feature names. Routes: service/http/routes.py. A signed receipt
per row comes back in each prediction when asked (`X-Receipts: true` or `?receipts=true`, service/receipts/).

Flow of a predict: read the body (bounded) -> `parse_predict` (the whole request, before any lookup) ->
the data plane -> `encode_predictions`. Large bodies parse and large answers encode beside the event loop.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from models.labels import LABEL_FORM, parse_label
from service.dataplane import Answer, DataPlane, InferRequest, NestedRows
from service.dataplane.offload import OFFLOAD_BYTES, OFFLOAD_ROWS, beside_loop_if
from service.errors import BadRequest
from service.lifecycle.loader import ServedModel
from service.protocols.exchange import Exchange, Reply, model_headers, wire_of
from service.protocols.metadata import model_parameters
from service.protocols.regression import is_regression, v1_predictions
from service.protocols.wire import BodyReader, json_response, parse_json_object


class V1Api:
    def __init__(self, plane: DataPlane, reader: BodyReader) -> None:
        self.plane = plane
        self.reader = reader

    async def live(self, _request: Request) -> Response:
        """KServe V1 liveness (the KServe SDK's `is_server_live`): the process answers."""
        return json_response({"status": "alive"})

    async def list_models(self, _request: Request) -> Response:
        return json_response({"models": self.plane.names()})

    async def model_status(self, request: Request) -> Response:
        # KServe V1's {"name", "ready"}, plus the same metadata as V2's `parameters` (service/protocols/metadata.py).
        name = request.path_params["name"]
        found = self.plane.find(name)
        answer = {"name": name, "ready": isinstance(found, ServedModel), "parameters": model_parameters(found)}
        headers = model_headers(found, self.plane.replica) if isinstance(found, ServedModel) else None
        return json_response(answer, headers=headers)

    async def predict(self, exchange: Exchange) -> Reply:
        params = exchange.params
        name, version = params["name"], params.get("version")
        asked = receipts_asked(exchange.header(b"x-receipts"), exchange.query("receipts"))
        label = checked_label(params.get("label"))
        raw = await self.reader.read_raw(exchange.scope, exchange.receive)
        parsed = await beside_loop_if(len(raw) >= OFFLOAD_BYTES, parse_predict, raw, name, version, asked, label)
        answer = await self.plane.infer(parsed, exchange.call)
        return await beside_loop_if(answer.rows >= OFFLOAD_ROWS, encode_predictions, answer, self.plane.replica)


def receipts_asked(header: str | None, query: str | None) -> bool:
    """The `X-Receipts` header or the `receipts` query parameter: true or false (absent: false)."""
    asked = False
    for where, value in (("header X-Receipts", header), ("query parameter receipts", query)):
        if value is None:
            continue
        if value.strip().lower() not in ("true", "false"):
            raise BadRequest(f"{where} must be true or false, got {value[:40]!r}")
        asked |= value.strip().lower() == "true"
    return asked


def checked_label(label: str | None) -> str | None:
    """A version label from the path (`/labels/{label}:predict`, as TF Serving spells it), or BadRequest."""
    if label is not None and parse_label(label) is None:
        raise BadRequest(f"invalid version label {label[:40]!r}: use {LABEL_FORM}")
    return label


def parse_predict(
    raw: bytes, name: str, version: str | None, receipts: bool = False, label: str | None = None
) -> InferRequest:
    """A V1 predict body -> the typed request, or BadRequest naming the first problem."""
    body = parse_json_object(raw)
    if "instances" not in body:
        raise BadRequest('request body must have "instances": a list of rows')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list of rows, got {type(instances).__name__}')
    if not instances:
        raise BadRequest('"instances" is empty: send at least one row')
    return InferRequest(name, version, NestedRows(instances), len(raw), receipts, label=label)


def encode_predictions(answer: Answer, replica: str) -> Reply:
    """The V1 answer: the version's encoded head (exchange.wire_of), then the rows."""
    wire = wire_of(answer.model, replica)
    return Reply(wire.v1_head + orjson.dumps(prediction_rows(answer)) + b"}", headers=wire.headers)


def prediction_rows(answer: Answer) -> list[dict[str, Any]]:
    """One object per row: label, probabilities, logits (a classifier's), and the row's receipt if asked."""
    served, outputs = answer.model, answer.outputs
    if is_regression(served.manifest):
        return v1_predictions(served.manifest, outputs)
    labels = served.manifest.class_labels
    logits, probabilities = outputs.logits.tolist(), outputs.probabilities.tolist()
    rows = [
        {"label": labels[index], "probabilities": probabilities[row], "logits": logits[row]}
        for row, index in enumerate(outputs.class_index.tolist())
    ]
    if answer.receipts is not None:
        for row, receipt in zip(rows, answer.receipts, strict=True):
            row["receipt"] = receipt
    return rows

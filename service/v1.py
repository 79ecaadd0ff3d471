"""KServe V1 protocol: `POST /v1/models/{name}:predict` with {"instances": [row, ...]}, each row a list of
numbers or an object keyed by the model's feature names. Routes: routes.py."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from models import InputSpec
from service.errors import BadRequest
from service.executor import Float32Array, Outputs
from service.http import OFFLOAD_BYTES, OFFLOAD_ROWS, BodyReader, json_response, model_headers, parse_json_object
from service.inference import Admission, Inference
from service.inputs import rows_from_instances
from service.loader import ServedModel
from service.metadata import model_parameters
from service.regression import is_regression, v1_predictions


class V1Api:
    def __init__(self, inference: Inference) -> None:
        settings = inference.settings
        self.inference = inference
        self.registry = inference.registry
        self.reader = BodyReader(settings.max_body_bytes, settings.read_timeout_s, inference.metrics)

    async def live(self, _request: Request) -> Response:
        """KServe V1 liveness (the KServe SDK's `is_server_live`): the process answers."""
        return json_response({"status": "alive"})

    async def list_models(self, _request: Request) -> Response:
        return json_response({"models": self.registry.names()})

    async def model_status(self, request: Request) -> Response:
        # KServe V1's {"name", "ready"}, plus the same metadata as V2's `parameters` (service/metadata.py).
        name = request.path_params["name"]
        found = self.registry.find(name)
        answer = {"name": name, "ready": isinstance(found, ServedModel), "parameters": model_parameters(found)}
        return json_response(answer, headers=model_headers(found) if isinstance(found, ServedModel) else None)

    async def predict(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        raw = await self.reader.read(request)
        if len(raw) >= OFFLOAD_BYTES:
            # Parsing a large body holds the event loop (orjson keeps the GIL; 8 MiB takes ~0.3 s): count its
            # rows first where the body's shape allows, then parse and decode beside the loop.
            admission = Admission(len(raw), lambda model: _rows_unparsed(raw, model))
            served, outputs = await self.inference.predict(
                "v1", name, version, lambda model: _instances(parse_json_object(raw), model), admission
            )
        else:
            body = parse_json_object(raw)
            count = _count(body)
            admission = Admission(len(raw), lambda _: count)
            served, outputs = await self.inference.predict(
                "v1", name, version, lambda model: _instances(body, model), admission
            )
        if len(outputs.class_index) < OFFLOAD_ROWS:
            return _answer(served, outputs)
        return await asyncio.to_thread(_answer, served, outputs)  # thousands of rows: beside the event loop


def _count(body: dict[str, Any]) -> int | None:
    instances = body.get("instances")
    return len(instances) if isinstance(instances, list) else None


_EMPTY_LIST = re.compile(rb"\[\s*\]")


def _rows_unparsed(raw: bytes, served: ServedModel) -> int | None:
    """The rows of a body that is only {"instances": <nested lists of numbers>}, counted without parsing it:
    with one key, no other string and no empty list, its commas are exactly (values - 1) at any nesting.
    None for any other body (it is parsed; the queue bound is checked then)."""
    if raw.count(b'"') != 2 or raw.count(b":") != 1 or _EMPTY_LIST.search(raw):
        return None
    values = raw.count(b",") + 1
    return -(-values // math.prod(served.manifest.input.shape))  # rows of a valid body; ragged ones fail anyway


def _instances(body: dict[str, Any], served: ServedModel) -> Float32Array:
    return decode_instances(body, served.manifest.input)


def decode_instances(body: dict[str, Any], spec: InputSpec) -> Float32Array:
    """The rows of a V1 request body -> (N, *spec.shape), or BadRequest naming the first problem."""
    if "instances" not in body:
        raise BadRequest('request body must have "instances": a list of rows')
    return rows_from_instances(body["instances"], spec.shape, spec.feature_names, spec.preprocessing)


def _answer(served: ServedModel, outputs: Outputs) -> Response:
    return json_response(_predictions(served, outputs), headers=model_headers(served))


def _predictions(served: ServedModel, outputs: Outputs) -> dict[str, Any]:
    if is_regression(served.manifest):
        rows = v1_predictions(served.manifest, outputs)
        return {"model_name": served.name, "model_version": str(served.version), "predictions": rows}
    labels = served.manifest.class_labels
    logits, probabilities = outputs.logits.tolist(), outputs.probabilities.tolist()
    return {
        "model_name": served.name,
        "model_version": str(served.version),
        "predictions": [
            {"label": labels[index], "probabilities": probabilities[row], "logits": logits[row]}
            for row, index in enumerate(outputs.class_index.tolist())
        ],
    }

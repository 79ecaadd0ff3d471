"""Open Inference Protocol (V2) over HTTP/REST, with the binary tensor data extension. Routes: routes.py."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from models import Manifest
from service import __version__, regression
from service.binary import HEADER, encode_tensor, flag_of, split_body, take_binary_inputs
from service.errors import BadRequest, NotReady
from service.executor import Float32Array, Outputs
from service.http import OFFLOAD_ROWS, BodyReader, json_response, model_headers, parse_json_object
from service.inference import Admission, Inference
from service.inputs import rows_from_bytes, rows_from_flat
from service.loader import ServedModel
from service.metadata import model_parameters
from service.regression import REGRESSION_OUTPUTS, is_regression
from service.snapshot import NotServing

INPUT_NAME = "input"
OUTPUTS = {"logits": "FP32", "probabilities": "FP32", "class_index": "INT64", "label": "BYTES"}
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_repository_metadata"]


class V2Api:
    def __init__(self, inference: Inference) -> None:
        settings = inference.settings
        self.inference = inference
        self.registry = inference.registry
        self.reader = BodyReader(settings.max_body_bytes, settings.read_timeout_s, inference.metrics)

    async def server_metadata(self, _request: Request) -> Response:
        return json_response({"name": "invariant-serve", "version": __version__, "extensions": EXTENSIONS})

    async def live(self, _request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, _request: Request) -> Response:
        # The process accepts connections only after every version was tried (app lifespan), so ready means
        # at least one serves (unversioned requests go to the highest that serves); the others say why on
        # their own endpoints and in the repository index.
        if not self.registry.any_ready():
            raise NotReady("no model is ready")
        return json_response({"ready": True})

    async def model_metadata(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        return _metadata(self.registry.find(name, version), self.registry.versions(name))

    async def model_ready(self, request: Request) -> Response:
        return _readiness(self.registry.find(request.path_params["name"], request.path_params.get("version")))

    async def infer(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        raw = await self.reader.read(request)
        json_part, binary = split_body(raw, request.headers.get(HEADER))
        body = parse_json_object(json_part)
        count = _declared_rows(body)
        admission = Admission(len(raw), lambda _: count)
        served, outputs = await self.inference.predict(
            "v2", name, version, lambda model: input_rows(body, binary, model.manifest.input.shape), admission
        )
        if len(outputs.class_index) < OFFLOAD_ROWS:
            return _infer_response(body, served, outputs)
        return await asyncio.to_thread(_infer_response, body, served, outputs)  # thousands of rows


def _declared_rows(body: dict[str, Any]) -> int | None:
    """shape[0] of the one input, when the request is well formed enough to say (decoding checks the rest)."""
    tensors = body.get("inputs")
    if isinstance(tensors, list) and len(tensors) == 1 and isinstance(tensors[0], dict):
        shape = tensors[0].get("shape")
        if isinstance(shape, list) and shape and type(shape[0]) is int and shape[0] > 0:
            return shape[0]
    return None


def _readiness(found: ServedModel | NotServing) -> Response:
    answer = {"name": found.name, "version": str(found.version)}
    if isinstance(found, ServedModel):
        return json_response({**answer, "ready": True}, headers=model_headers(found))
    reason = found.reason or "still loading"
    return json_response({**answer, "ready": False, "error": f"model {found.name!r} is not ready: {reason}"}, 503)


def _metadata(found: ServedModel | NotServing, versions: list[int]) -> Response:
    answer: dict[str, Any] = {
        "name": found.name,
        "versions": [str(v) for v in versions],
        "platform": "pytorch_invariant",
        "parameters": model_parameters(found),
    }
    if isinstance(found, NotServing):
        return json_response(answer)
    classes = len(found.manifest.class_labels) or found.manifest.architecture.num_classes  # regression: 1
    answer["inputs"] = [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *found.manifest.input.shape]}]
    answer["outputs"] = [
        {"name": name, "datatype": datatype, "shape": [-1, classes] if datatype == "FP32" else [-1]}
        for name, datatype in _outputs_of(found.manifest).items()
    ]
    return json_response(answer, headers=model_headers(found))


def input_rows(body: dict[str, Any], binary: bytes, input_shape: tuple[int, ...]) -> Float32Array:
    """The one input tensor of a V2 request (JSON data or binary) -> (N, *input_shape), or BadRequest."""
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or len(tensors) != 1 or not isinstance(tensors[0], dict):
        raise BadRequest(f'"inputs" must be a list holding one tensor named {INPUT_NAME!r}')
    tensor = tensors[0]
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"unknown input {tensor.get('name')!r}; the model's input is {INPUT_NAME!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(n) is int for n in shape):
        raise BadRequest(f'input {INPUT_NAME!r}: "shape" must be a list of integers')
    datatype = str(tensor.get("datatype", ""))
    raw = take_binary_inputs(tensors, binary)[0]
    what = f"input {INPUT_NAME!r}"
    if raw is not None:
        return rows_from_bytes(raw, datatype, tuple(shape), input_shape, what)
    if datatype not in {"FP32", "FP64", "INT32", "INT64"}:
        raise BadRequest(f"{what}: datatype {datatype!r} is not supported; use FP32")
    return rows_from_flat(tensor.get("data"), tuple(shape), input_shape, what, datatype)


def _outputs_of(manifest: Manifest) -> dict[str, str]:
    return REGRESSION_OUTPUTS if is_regression(manifest) else OUTPUTS


def requested_outputs(body: dict[str, Any], available: dict[str, str] = OUTPUTS) -> dict[str, bool]:
    """Output name -> whether to send it as binary data."""
    default_binary = flag_of(body, "request", "binary_data_output", False)
    requested = body.get("outputs")
    if requested is None:
        return dict.fromkeys(available, default_binary)
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    chosen: dict[str, bool] = {}
    for output in requested:
        name = output.get("name")
        if name not in available:
            raise BadRequest(f"unknown output {name!r}; the model's outputs are {list(available)}")
        chosen[str(name)] = flag_of(output, f"output {name!r}", "binary_data", default_binary)
    return chosen


def _infer_response(body: dict[str, Any], served: ServedModel, outputs: Outputs) -> Response:
    values: dict[str, np.ndarray[Any, Any] | list[str]]
    if is_regression(served.manifest):
        values = dict(regression.v2_tensors(served.manifest, outputs))
    else:
        values = {
            "logits": outputs.logits,
            "probabilities": outputs.probabilities,
            "class_index": outputs.class_index,
            "label": [served.manifest.class_labels[i] for i in outputs.class_index.tolist()],
        }
    available = _outputs_of(served.manifest)
    answer: dict[str, Any] = {"model_name": served.name, "model_version": str(served.version)}
    if "id" in body:
        answer["id"] = body["id"]
    answer["parameters"] = {"checkpoint_sha256": served.sha256}
    tensors, blobs = [], []
    for name, as_binary in requested_outputs(body, available).items():
        data = values[name]
        tensor: dict[str, Any] = {"name": name, "datatype": available[name], "shape": _shape(data)}
        if as_binary:
            blob = encode_tensor(data)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = data if isinstance(data, list) else data.reshape(-1).tolist()
        tensors.append(tensor)
    answer["outputs"] = tensors
    headers = model_headers(served)
    if not blobs:
        return json_response(answer, headers=headers)
    header = orjson.dumps(answer)
    headers[HEADER] = str(len(header))
    return Response(header + b"".join(blobs), media_type="application/octet-stream", headers=headers)


def _shape(data: np.ndarray[Any, Any] | list[str]) -> list[int]:
    return [len(data)] if isinstance(data, list) else list(data.shape)

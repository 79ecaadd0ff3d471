"""Open Inference Protocol (V2) over HTTP/REST, with the binary tensor data extension. Routes:
service/http/routes.py.

Flow of an infer: read the body (bounded) -> `parse_infer` (JSON part, binary part, the one input, the
requested outputs and their encodings, `id`, the `receipts` parameter: the whole request, before any
lookup) -> the data plane -> `encode_infer`. Large bodies parse and large answers encode beside the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from models import Manifest
from models.labels import LABEL_FORM, parse_label
from service import __version__
from service.dataplane import Answer, DataPlane, FlatTensor, InferRequest, RawTensor, RowSource
from service.dataplane.offload import OFFLOAD_BYTES, OFFLOAD_ROWS, beside_loop_if
from service.errors import BadRequest, NotReady
from service.lifecycle.loader import ServedModel
from service.lifecycle.snapshot import NotServing
from service.protocols.binary import HEADER, encode_tensor, flag_of, parameters_of, split_body, take_binary_inputs
from service.protocols.exchange import OCTETS, Exchange, Reply, json_reply, model_headers, wire_of
from service.protocols.metadata import model_parameters
from service.protocols.regression import REGRESSION_OUTPUTS, is_regression, v2_tensors
from service.protocols.wire import BodyReader, json_response, parse_json_object

HEADER_BYTES = HEADER.encode()
INPUT_NAME = "input"
OUTPUTS = {"logits": "FP32", "probabilities": "FP32", "class_index": "INT64", "label": "BYTES"}
ANY_OUTPUTS = OUTPUTS | REGRESSION_OUTPUTS
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_repository_metadata"]
MAX_ID_CHARS = 1024  # the request id is echoed in the answer and in logs: bounded, printable text
LABEL_PARAMETER = "label"  # request parameter naming a version label (labels.json) instead of a version


@dataclass(frozen=True)
class V2Infer:
    """A whole V2 infer request, validated: the protocol-neutral part, and how to answer it."""

    request: InferRequest
    id: str | None
    outputs: dict[str, bool]  # output name -> send as binary data
    outputs_named: bool = True  # False: the request named none, so every output of the model is sent


class V2Api:
    def __init__(self, plane: DataPlane, reader: BodyReader) -> None:
        self.plane = plane
        self.reader = reader

    async def server_metadata(self, _request: Request) -> Response:
        return json_response({"name": "invariant-serve", "version": __version__, "extensions": EXTENSIONS})

    async def live(self, _request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, _request: Request) -> Response:
        # The process accepts connections only after every version was tried (app lifespan), so ready means
        # at least one serves (unversioned requests go to the highest that serves); the others say why on
        # their own endpoints and in the repository index.
        if not self.plane.any_ready():
            raise NotReady("no model is ready")
        return json_response({"ready": True})

    async def model_metadata(self, request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        found = self.plane.find(name, version)
        headers = model_headers(found, self.plane.replica) if isinstance(found, ServedModel) else None
        return json_response(model_metadata(found, self.plane.versions(name)), headers=headers)

    async def model_ready(self, request: Request) -> Response:
        found = self.plane.find(request.path_params["name"], request.path_params.get("version"))
        answer = {"name": found.name, "version": str(found.version)}
        if isinstance(found, ServedModel):
            return json_response({**answer, "ready": True}, headers=model_headers(found, self.plane.replica))
        reason = found.reason or "still loading"
        error = f"model {found.name!r} is not ready: {reason}"
        return json_response({**answer, "ready": False, "error": error}, 503)

    async def infer(self, exchange: Exchange) -> Reply:
        name, version = exchange.params["name"], exchange.params.get("version")
        raw = await self.reader.read_raw(exchange.scope, exchange.receive)
        header_length = exchange.header(HEADER_BYTES)
        parsed = await beside_loop_if(len(raw) >= OFFLOAD_BYTES, parse_infer, raw, header_length, name, version)
        call = exchange.call
        if parsed.id is None and call.request_id:  # the X-Request-Id (given or generated) names the answer
            parsed = replace(parsed, id=call.request_id)
        answer = await self.plane.infer(parsed.request, call)
        return await beside_loop_if(answer.rows >= OFFLOAD_ROWS, encode_infer, parsed, answer, self.plane.replica)


def parse_infer(raw: bytes, header_length: str | None, name: str, version: str | None) -> V2Infer:
    """A V2 infer body (JSON, or JSON + binary tensors) -> the validated request, or BadRequest."""
    json_part, binary = split_body(raw, header_length)
    body = parse_json_object(json_part)
    rows = input_tensor(body, binary)
    identifier, outputs = request_id(body), requested_outputs(body)
    receipts = flag_of(body, "request", "receipts", False)  # a signed receipt per row, in parameters.receipts
    named = tuple(outputs) if "outputs" in body else ()
    label = request_label(body, version)
    request = InferRequest(name, version, rows, len(raw), receipts, identifier, named, label)
    return V2Infer(request, identifier, outputs, "outputs" in body)


def request_label(body: dict[str, Any], version: str | None) -> str | None:
    """The optional `parameters.label`: the version labelled so (labels.json) answers, e.g. "canary"."""
    label = parameters_of(body, "request").get(LABEL_PARAMETER)
    if label is None:
        return None
    if not isinstance(label, str) or parse_label(label) is None:
        raise BadRequest(f'"parameters.{LABEL_PARAMETER}" must be a version label ({LABEL_FORM}), got {label!r:.60}')
    if version is not None:
        raise BadRequest(f'a request names a version or a label, not both (version {version}, label "{label}")')
    return label


def request_id(body: dict[str, Any]) -> str | None:
    """The optional `id`: a string in the protocol, echoed in the answer."""
    if "id" not in body:
        return None
    value = body["id"]
    if not isinstance(value, str):
        raise BadRequest(f'"id" must be a string, got {type(value).__name__}')
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(f'"id" has {len(value)} characters, more than {MAX_ID_CHARS}')
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") parses as JSON but has no UTF-8 form
        raise BadRequest('"id" is not valid Unicode text (lone surrogate)') from None
    return value


def input_tensor(body: dict[str, Any], binary: bytes) -> RowSource:
    """The one input tensor of a V2 request (JSON data or binary), checked as far as it can be without the
    model; its shape against the model's input is checked when the data plane decodes it."""
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
    if raw is not None:
        return RawTensor(INPUT_NAME, datatype, tuple(shape), raw)
    if datatype not in {"FP32", "FP64", "INT32", "INT64"}:
        raise BadRequest(f"input {INPUT_NAME!r}: datatype {datatype!r} is not supported; use FP32")
    return FlatTensor(INPUT_NAME, datatype, tuple(shape), tensor.get("data"))


def outputs_of(manifest: Manifest) -> dict[str, str]:
    """A model's outputs: a classifier's OUTPUTS, or a regression model's (service/protocols/regression.py)."""
    return REGRESSION_OUTPUTS if is_regression(manifest) else OUTPUTS


def requested_outputs(body: dict[str, Any], available: dict[str, str] = ANY_OUTPUTS) -> dict[str, bool]:
    """Output name -> whether to send it as binary data. Without a model (at parse time) every name any
    model has is accepted; `_chosen` then holds the request to the model that answered."""
    default_binary = flag_of(body, "request", "binary_data_output", False)
    requested = body.get("outputs")
    if requested is None:
        return dict.fromkeys(available, default_binary)
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequest('"outputs" must be a list of {"name": ...} objects')
    chosen: dict[str, bool] = {}
    for output in requested:
        name = output.get("name")
        if not isinstance(name, str) or name not in available:
            raise BadRequest(f"unknown output {name!r}; {_outputs_hint(available)}")
        chosen[str(name)] = flag_of(output, f"output {name!r}", "binary_data", default_binary)
    return chosen


OutputValues = dict[str, np.ndarray[Any, Any] | list[str]]


def output_values(answer: Answer) -> OutputValues:
    """Every output of the answer by name (`outputs_of` its model): a classifier's logits and probabilities
    (N, classes) float32, class_index (N,) int64, label N strings; a regression model's value and logits.
    The one source of both transports' outputs."""
    served, outputs = answer.model, answer.outputs
    if is_regression(served.manifest):
        return dict(v2_tensors(served.manifest, outputs))
    return {
        "logits": outputs.logits,
        "probabilities": outputs.probabilities,
        "class_index": outputs.class_index,
        "label": [served.manifest.class_labels[i] for i in outputs.class_index.tolist()],
    }


def encode_infer(parsed: V2Infer, answer: Answer, replica: str) -> Reply:
    served = answer.model
    wire = wire_of(served, replica)
    values = output_values(answer)
    available = outputs_of(served.manifest)
    reply: dict[str, Any] = {"model_name": served.name, "model_version": wire.version}
    if parsed.id is not None:
        reply["id"] = parsed.id
    reply["parameters"] = {"checkpoint_sha256": served.sha256}
    if answer.receipts is not None:
        reply["parameters"]["receipts"] = answer.receipts
    tensors, blobs = [], []
    for name, as_binary in _chosen(parsed, available).items():
        data = values[name]
        tensor: dict[str, Any] = {"name": name, "datatype": available[name], "shape": output_shape(data)}
        if as_binary:
            blob = encode_tensor(data)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = data if isinstance(data, list) else data.reshape(-1).tolist()
        tensors.append(tensor)
    reply["outputs"] = tensors
    if not blobs:
        return json_reply(reply, headers=wire.headers)
    header = orjson.dumps(reply)
    headers = [*wire.headers, (HEADER_BYTES, str(len(header)).encode())]
    return Reply(header + b"".join(blobs), content_type=OCTETS, headers=headers)


# Triton's platform names where the backend is one (onnxruntime), ours for the checkpoints our CLI trains.
PLATFORMS = {"onnx": "onnxruntime_onnx", "pt2": "pytorch_torch_export"}
OWN_PLATFORM = "pytorch_invariant"


def model_metadata(found: ServedModel | NotServing, versions: list[int]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "name": found.name,
        "versions": [str(v) for v in versions],
        "platform": "",  # a version that does not serve has no file read yet: its platform is not known
        "parameters": model_parameters(found),
    }
    if isinstance(found, NotServing):
        return answer
    answer["platform"] = PLATFORMS.get(found.manifest.architecture.arch, OWN_PLATFORM)
    classes = len(found.manifest.class_labels) or found.manifest.architecture.num_classes  # regression: 1
    answer["inputs"] = [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *found.manifest.input.shape]}]
    answer["outputs"] = [
        {"name": name, "datatype": datatype, "shape": [-1, classes] if datatype == "FP32" else [-1]}
        for name, datatype in outputs_of(found.manifest).items()
    ]
    return answer


def _outputs_hint(available: dict[str, str]) -> str:
    if available is ANY_OUTPUTS:  # before the model is known
        return f"a classifier's outputs are {list(OUTPUTS)}, a regression model's {list(REGRESSION_OUTPUTS)}"
    return f"the model's outputs are {list(available)}"


def _chosen(parsed: V2Infer, available: dict[str, str]) -> dict[str, bool]:
    """The outputs to send: those named (the data plane held them to the model before computing: 400 for
    an unknown one, never a 500 after compute), or all of the model's."""
    if not parsed.outputs_named:
        binary = next(iter(parsed.outputs.values()), False)
        return dict.fromkeys(available, binary)
    return parsed.outputs


def output_shape(data: np.ndarray[Any, Any] | list[str]) -> list[int]:
    return [len(data)] if isinstance(data, list) else list(data.shape)

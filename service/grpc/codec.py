"""The gRPC codec: ModelInferRequest bytes -> the data plane's `InferRequest`, and `Answer` -> ModelInferResponse
bytes. Like the HTTP codecs it parses and validates the whole request before any model lookup; only the checks
that need the model (the input's shape) run later, in the data plane, by the same rules as HTTP (rows.py).

Input data arrives as `raw_input_contents` (little-endian bytes: what tritonclient sends) or as typed
`contents` (fp32/fp64/int/int64_contents). FP32 and FP64 become a `RawTensor` (typed float contents as their
exact little-endian bytes, so the bits are the ones sent), INT32/INT64 contents a `FlatTensor`. Outputs always
go back as `raw_output_contents`, as Triton does: the same bytes as the V2 binary extension over HTTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from service.dataplane import Answer, FlatTensor, InferRequest, RawTensor, RowSource
from service.errors import BadRequest
from service.grpc.messages import pb
from service.protocols.binary import encode_tensor
from service.protocols.v2 import ANY_OUTPUTS, INPUT_NAME, MAX_ID_CHARS, output_shape, output_values, outputs_of

MAX_NAME_CHARS = 256  # model names are at most 128 characters (models/versions.py NAME_PATTERN)
MAX_VERSION_CHARS = 32
# Parameters that would change what the data or the answer is: refused rather than ignored (never a wrong
# answer). Any other request, input or output parameter is ignored, as over HTTP.
SHARED_MEMORY = ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")
REFUSED_OUTPUT_PARAMETERS = (*SHARED_MEMORY, "classification")
# datatype -> (the typed contents field that carries it, numpy dtype of its raw bytes or None: a FlatTensor)
TYPED_CONTENTS: dict[str, tuple[str, str | None]] = {
    "FP32": ("fp32_contents", "<f4"),
    "FP64": ("fp64_contents", "<f8"),
    "INT32": ("int_contents", None),
    "INT64": ("int64_contents", None),
}
CONTENT_FIELDS = (
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
)
RAW_ITEM_BYTES = {"FP32": 4, "FP64": 8}


@dataclass(frozen=True)
class GrpcInfer:
    """A whole ModelInfer request, validated: the protocol-neutral part, and how to answer it."""

    request: InferRequest
    id: str
    outputs: tuple[str, ...]  # output names, in the order asked (all of OUTPUTS when none was asked)


def parse_message(message_type: Any, raw: bytes) -> Any:
    """Any request message from its wire bytes; malformed bytes are a BadRequest, never a crash."""
    message = message_type()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"malformed {message_type.__name__}: {exc}") from None
    return message


def parse_infer(raw: bytes) -> GrpcInfer:
    """ModelInferRequest bytes -> the validated request, or BadRequest naming what is wrong."""
    message = parse_message(pb.ModelInferRequest, raw)
    name = model_name(message.model_name)
    version = model_version(message.model_version)
    if len(message.id) > MAX_ID_CHARS:
        raise BadRequest(f"id has {len(message.id)} characters, more than {MAX_ID_CHARS}")
    rows = input_tensor(message)
    named = requested_outputs(message)
    return GrpcInfer(InferRequest(name, version, rows, len(raw), outputs=named), message.id, named)


def model_name(name: str) -> str:
    if not name:
        raise BadRequest("model_name is empty: name the model to use")
    if len(name) > MAX_NAME_CHARS:
        raise BadRequest(f"model_name has {len(name)} characters, more than {MAX_NAME_CHARS}")
    return name


def model_version(version: str) -> str | None:
    """'' -> None: the version unversioned traffic gets."""
    if len(version) > MAX_VERSION_CHARS:
        raise BadRequest(f"model_version has {len(version)} characters, more than {MAX_VERSION_CHARS}")
    return version or None


def input_tensor(message: Any) -> RowSource:
    """The one input tensor, checked as far as it can be without the model: name, datatype, where its data is,
    and that the data fills the declared shape."""
    if len(message.inputs) != 1:
        raise BadRequest(f"inputs must hold one tensor named {INPUT_NAME!r}, got {len(message.inputs)}")
    tensor = message.inputs[0]
    if tensor.name != INPUT_NAME:
        raise BadRequest(f"unknown input {tensor.name[:64]!r}; the model's input is {INPUT_NAME!r}")
    _refuse_parameters(tensor.parameters, SHARED_MEMORY, f"input {INPUT_NAME!r}")
    shape = tuple(tensor.shape)
    if any(n < 0 for n in shape):
        raise BadRequest(f"input {INPUT_NAME!r}: shape {list(shape)} must be [batch, ...] with batch >= 1")
    typed = [field for field in CONTENT_FIELDS if len(getattr(tensor.contents, field))]
    raw_count = len(message.raw_input_contents)
    if raw_count:
        if raw_count != 1 or typed:
            raise BadRequest(
                f"raw_input_contents must hold exactly one entry, for input {INPUT_NAME!r}, and no input may also "
                f"have typed contents (got {raw_count} raw entries, typed contents {typed})"
            )
        return _raw_tensor(tensor.datatype, shape, message.raw_input_contents[0])
    return _typed_tensor(tensor.datatype, shape, tensor.contents, typed)


def _raw_tensor(datatype: str, shape: tuple[int, ...], raw: bytes) -> RawTensor:
    item_bytes = RAW_ITEM_BYTES.get(datatype)
    if item_bytes is None:
        raise BadRequest(f"input {INPUT_NAME!r}: raw datatype {datatype[:16]!r} is not supported; use FP32 (or FP64)")
    expected = math.prod(shape) * item_bytes
    if len(raw) != expected:
        raise BadRequest(
            f"input {INPUT_NAME!r}: {len(raw)} bytes of raw contents, expected {expected} "
            f"for shape {list(shape)} of {datatype}"
        )
    return RawTensor(INPUT_NAME, datatype, shape, raw)


def _typed_tensor(datatype: str, shape: tuple[int, ...], contents: Any, typed: list[str]) -> RowSource:
    if not typed:
        raise BadRequest(f"input {INPUT_NAME!r} has no data: send raw_input_contents or typed contents")
    if datatype not in TYPED_CONTENTS:
        raise BadRequest(f"input {INPUT_NAME!r}: datatype {datatype[:16]!r} is not supported; use FP32")
    field, raw_dtype = TYPED_CONTENTS[datatype]
    if typed != [field]:
        raise BadRequest(f"input {INPUT_NAME!r}: a {datatype} tensor carries its data in {field} only, got {typed}")
    values = getattr(contents, field)
    if len(values) != math.prod(shape):
        raise BadRequest(f"input {INPUT_NAME!r}: {len(values)} values do not fill shape {list(shape)}")
    if raw_dtype is None:
        return FlatTensor(INPUT_NAME, datatype, shape, list(values))
    # Every float32 (and float64) value as its exact little-endian bytes: the bits sent are the bits decoded.
    return RawTensor(INPUT_NAME, datatype, shape, np.asarray(values, dtype=raw_dtype).tobytes())


def requested_outputs(message: Any) -> tuple[str, ...]:
    """The outputs named (() for all of the model's); held to the answering model's by the data plane."""
    chosen: dict[str, None] = {}
    for output in message.outputs:
        if output.name not in ANY_OUTPUTS:
            raise BadRequest(f"unknown output {output.name[:64]!r}; outputs are among {list(ANY_OUTPUTS)}")
        _refuse_parameters(output.parameters, REFUSED_OUTPUT_PARAMETERS, f"output {output.name!r}")
        chosen[output.name] = None
    return tuple(chosen)


def _refuse_parameters(parameters: Any, refused: tuple[str, ...], what: str) -> None:
    found = sorted(key for key in parameters if key in refused)
    if found:
        raise BadRequest(f"{what}: parameters {found} are not supported (no shared memory, no classification)")


def encode_infer(parsed: GrpcInfer, answer: Answer, replica: str) -> bytes:
    """ModelInferResponse bytes: every asked output in raw_output_contents, and in `parameters` who answered
    (checkpoint sha256, numerics fingerprint, replica), as the HTTP answer's headers say."""
    served = answer.model
    response = pb.ModelInferResponse(model_name=served.name, model_version=str(served.version), id=parsed.id)
    response.parameters["checkpoint_sha256"].string_param = served.sha256
    response.parameters["numerics_fingerprint"].string_param = served.numerics.fingerprint
    response.parameters["replica"].string_param = replica
    values, available = output_values(answer), outputs_of(served.manifest)
    for name in parsed.outputs or tuple(available):
        data = values[name]
        response.outputs.add(name=name, datatype=available[name], shape=output_shape(data))
        response.raw_output_contents.append(encode_tensor(data))
    encoded: bytes = response.SerializeToString()
    return encoded

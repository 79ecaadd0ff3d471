"""Helpers of the gRPC tests: Triton's generated messages (tritonclient's, as the server uses), raw calls to
one method, and the same rows over HTTP V2 binary for bitwise comparison."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2 as pb

SERVICE = "/inference.GRPCInferenceService/"
OUTPUTS = ("logits", "probabilities", "class_index", "label")
API_KEY = "grpc-api-key-0123456789abcdef"
ADMIN_KEY = "grpc-admin-key-0123456789abcdef"


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def call(
    channel: grpc.Channel,
    method: str,
    request: Any,
    response_type: Any,
    key: str | None = None,
    timeout: float = 30.0,
) -> Any:
    """One unary call by method name; raises grpc.RpcError on a non-OK status."""
    stub = channel.unary_unary(
        SERVICE + method, request_serializer=_serialize, response_deserializer=response_type.FromString
    )
    metadata = bearer(key) if key else None
    return stub(request, metadata=metadata, timeout=timeout)


def call_bytes(channel: grpc.Channel, method: str, raw: bytes, key: str | None = None, timeout: float = 30.0) -> bytes:
    """One unary call with a request given as bytes (malformed ones too); the answer's bytes."""
    stub = channel.unary_unary(SERVICE + method)  # no (de)serializers: bytes in, bytes out
    answer: bytes = stub(raw, metadata=bearer(key) if key else None, timeout=timeout)
    return answer


def _serialize(message: Any) -> bytes:
    serialized: bytes = message.SerializeToString()
    return serialized


def code_of(error: grpc.RpcError) -> grpc.StatusCode:
    code: grpc.StatusCode = error.code()
    return code


def raw_infer_request(model: str, rows: np.ndarray[Any, Any], version: str = "", request_id: str = "") -> Any:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(np.ascontiguousarray(rows, dtype="<f4").tobytes())
    return request


def grpc_outputs(response: Any) -> dict[str, bytes]:
    """Output name -> its raw bytes."""
    assert len(response.outputs) == len(response.raw_output_contents)
    return {tensor.name: raw for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


def http_binary_outputs(url: str, model: str, rows: np.ndarray[Any, Any], key: str | None = None) -> dict[str, bytes]:
    """The same rows through V2 infer with the binary tensor extension, every output as binary data."""
    data = np.ascontiguousarray(rows, dtype="<f4").tobytes()
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
    }
    head = json.dumps(header).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    response = httpx.post(f"{url}/v2/models/{model}/infer", content=head + data, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    reply = json.loads(response.content[:length])
    blob, offset, found = response.content[length:], 0, {}
    for tensor in reply["outputs"]:
        size = tensor["parameters"]["binary_data_size"]
        found[tensor["name"]] = blob[offset : offset + size]
        offset += size
    assert offset == len(blob)
    return found

"""A KServe `grpc_predict_v2.proto` client, run in its own process by tests/test_grpc.py (KServe's and Triton's
generated modules both define `inference.*` and clash in one process, kserve/kserve#3099).

The kserve package (its generated grpc_predict_v2_pb2) is not installed here: its SDK pulls pandas, kubernetes
and more. So this script describes KServe's messages itself, field by field as KServe's proto numbers them
(package `inference`, service GRPCInferenceService), in a private descriptor pool, and calls the server with
them: what any client generated from KServe's proto puts on the wire.

    python tests/kserve_grpc_client.py HOST:PORT API_KEY ADMIN_KEY ROWS_JSON  -> one JSON object on stdout
"""

from __future__ import annotations

import json
import sys
from typing import Any

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

T = descriptor_pb2.FieldDescriptorProto
REPEATED, OPTIONAL = T.LABEL_REPEATED, T.LABEL_OPTIONAL

# (name, number, type, label, message type name or "") per field, as KServe's grpc_predict_v2.proto has them.
PARAMETER = [("bool_param", 1, T.TYPE_BOOL), ("int64_param", 2, T.TYPE_INT64), ("string_param", 3, T.TYPE_STRING)]
CONTENTS = [
    ("bool_contents", 1, T.TYPE_BOOL),
    ("int_contents", 2, T.TYPE_INT32),
    ("int64_contents", 3, T.TYPE_INT64),
    ("uint_contents", 4, T.TYPE_UINT32),
    ("uint64_contents", 5, T.TYPE_UINT64),
    ("fp32_contents", 6, T.TYPE_FLOAT),
    ("fp64_contents", 7, T.TYPE_DOUBLE),
    ("bytes_contents", 8, T.TYPE_BYTES),
]


def _message(file: Any, name: str, fields: list[tuple[Any, ...]], parent: Any = None) -> Any:
    message = (parent.nested_type if parent is not None else file.message_type).add(name=name)
    for field in fields:
        field_name, number, kind = field[:3]
        label = field[3] if len(field) > 3 else OPTIONAL
        added = message.field.add(name=field_name, number=number, type=kind, label=label)
        if len(field) > 4:
            added.type_name = field[4]
    return message


def _map_entry(message: Any, field_name: str, number: int, value_type: str) -> None:
    entry_name = "".join(part.capitalize() for part in field_name.split("_")) + "Entry"
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=OPTIONAL)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=OPTIONAL, type_name=value_type)
    message.field.add(
        name=field_name, number=number, type=T.TYPE_MESSAGE, label=REPEATED, type_name=f"{message.name}.{entry_name}"
    )


def _contents_field(tensor: Any) -> None:
    tensor.field.add(name="contents", number=5, type=T.TYPE_MESSAGE, label=OPTIONAL, type_name="InferTensorContents")


def kserve_messages() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(name="grpc_predict_v2.proto", package="inference", syntax="proto3")
    parameter = _message(file, "InferParameter", [(*f, OPTIONAL) for f in PARAMETER])
    parameter.oneof_decl.add(name="parameter_choice")
    for field in parameter.field:
        field.oneof_index = 0
    _message(file, "InferTensorContents", [(*f, REPEATED) for f in CONTENTS])
    _message(file, "ServerLiveRequest", [])
    _message(file, "ServerLiveResponse", [("live", 1, T.TYPE_BOOL)])
    _message(file, "ServerReadyRequest", [])
    _message(file, "ServerReadyResponse", [("ready", 1, T.TYPE_BOOL)])
    _message(file, "ModelReadyRequest", [("name", 1, T.TYPE_STRING), ("version", 2, T.TYPE_STRING)])
    _message(file, "ModelReadyResponse", [("ready", 1, T.TYPE_BOOL)])
    _message(file, "ModelMetadataRequest", [("name", 1, T.TYPE_STRING), ("version", 2, T.TYPE_STRING)])
    metadata = _message(
        file,
        "ModelMetadataResponse",
        [("name", 1, T.TYPE_STRING), ("versions", 2, T.TYPE_STRING, REPEATED), ("platform", 3, T.TYPE_STRING)],
    )
    tensor_fields = [("name", 1, T.TYPE_STRING), ("datatype", 2, T.TYPE_STRING), ("shape", 3, T.TYPE_INT64, REPEATED)]
    _message(file, "TensorMetadata", tensor_fields, metadata)
    for name, number in (("inputs", 4), ("outputs", 5)):
        metadata.field.add(
            name=name,
            number=number,
            type=T.TYPE_MESSAGE,
            label=REPEATED,
            type_name="ModelMetadataResponse.TensorMetadata",
        )
    request = _message(
        file,
        "ModelInferRequest",
        [("model_name", 1, T.TYPE_STRING), ("model_version", 2, T.TYPE_STRING), ("id", 3, T.TYPE_STRING)],
    )
    _map_entry(request, "parameters", 4, "InferParameter")
    infer_input = _message(file, "InferInputTensor", tensor_fields, request)
    _map_entry(infer_input, "parameters", 4, "InferParameter")
    infer_input.field.add(
        name="contents", number=5, type=T.TYPE_MESSAGE, label=OPTIONAL, type_name="InferTensorContents"
    )
    requested = _message(file, "InferRequestedOutputTensor", [("name", 1, T.TYPE_STRING)], request)
    _map_entry(requested, "parameters", 2, "InferParameter")
    request.field.add(
        name="inputs", number=5, type=T.TYPE_MESSAGE, label=REPEATED, type_name="ModelInferRequest.InferInputTensor"
    )
    request.field.add(
        name="outputs",
        number=6,
        type=T.TYPE_MESSAGE,
        label=REPEATED,
        type_name="ModelInferRequest.InferRequestedOutputTensor",
    )
    request.field.add(name="raw_input_contents", number=7, type=T.TYPE_BYTES, label=REPEATED)
    response = _message(
        file,
        "ModelInferResponse",
        [("model_name", 1, T.TYPE_STRING), ("model_version", 2, T.TYPE_STRING), ("id", 3, T.TYPE_STRING)],
    )
    _map_entry(response, "parameters", 4, "InferParameter")
    output = _message(file, "InferOutputTensor", tensor_fields, response)
    _map_entry(output, "parameters", 4, "InferParameter")
    _contents_field(output)
    response.field.add(
        name="outputs", number=5, type=T.TYPE_MESSAGE, label=REPEATED, type_name="ModelInferResponse.InferOutputTensor"
    )
    response.field.add(name="raw_output_contents", number=6, type=T.TYPE_BYTES, label=REPEATED)
    _message(file, "RepositoryModelLoadRequest", [("model_name", 1, T.TYPE_STRING)])
    _message(file, "RepositoryModelLoadResponse", [("model_name", 1, T.TYPE_STRING), ("isLoaded", 2, T.TYPE_BOOL)])
    pool = descriptor_pool.DescriptorPool()
    described = pool.Add(file)
    del described
    names = [m.name for m in file.message_type]
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{name}")) for name in names}


def main(target: str, api_key: str, admin_key: str, rows_json: str) -> dict[str, Any]:
    messages = kserve_messages()
    rows = np.asarray(json.loads(rows_json), dtype=np.float32)
    with grpc.insecure_channel(target) as channel:

        def unary(method: str, request: Any, answer: str, key: str) -> Any:
            stub = channel.unary_unary(
                f"/inference.GRPCInferenceService/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=messages[answer].FromString,
            )
            return stub(request, metadata=(("authorization", f"Bearer {key}"),), timeout=30)

        found: dict[str, Any] = {
            "live": unary("ServerLive", messages["ServerLiveRequest"](), "ServerLiveResponse", api_key).live,
            "ready": unary("ServerReady", messages["ServerReadyRequest"](), "ServerReadyResponse", api_key).ready,
            "model_ready": unary(
                "ModelReady", messages["ModelReadyRequest"](name="tiny"), "ModelReadyResponse", api_key
            ).ready,
        }
        metadata = unary(
            "ModelMetadata", messages["ModelMetadataRequest"](name="tiny"), "ModelMetadataResponse", api_key
        )
        found["metadata"] = {"name": metadata.name, "versions": list(metadata.versions), "platform": metadata.platform}
        request = messages["ModelInferRequest"](model_name="tiny")
        tensor = request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
        answer = unary("ModelInfer", request, "ModelInferResponse", api_key)
        found["outputs"] = [o.name for o in answer.outputs]
        raw = dict(zip(found["outputs"], answer.raw_output_contents, strict=True))
        found["logits"], found["probabilities"] = raw["logits"].hex(), raw["probabilities"].hex()
        try:
            unary(
                "RepositoryModelLoad",
                messages["RepositoryModelLoadRequest"](model_name="spare"),
                "RepositoryModelLoadResponse",
                admin_key,
            )
            found["load"] = ["OK", ""]
        except grpc.RpcError as error:
            found["load"] = [error.code().name, error.details()]
    return found


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))

"""The generated protobuf messages of Triton's `grpc_service.proto` (package `inference`), as tritonclient ships
them (`tritonclient.grpc.service_pb2`): one set of generated modules for the server and for the tests' clients,
so both can live in one process (two generated copies of `inference.*` clash in protobuf's default pool).

Its core messages (live, ready, metadata, ModelInfer) are wire-identical to KServe's `grpc_predict_v2.proto`;
the repository messages are Triton's (KServe's RepositoryModelLoad/Unload put `model_name` in field 1, which
is Triton's `repository_name`: such a call is refused, never misread).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from tritonclient.grpc import service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
# A call's grpc.aio.ServicerContext: abort, invocation_metadata, set_trailing_metadata, time_remaining.
# grpcio ships no type hints, so it is Any to mypy.
Context: TypeAlias = Any

__all__ = ["SERVICE", "Context", "pb"]

"""The gRPC method table and its one way in: per call, in this order and nowhere else: find the method ->
check the caller's key for its access level (the route table's levels: health public, inference and metadata
an API key, the repository an admin key) -> call it -> map any error to a status code -> count ModelInfer
calls with the status sent. Methods of the service that are not in the table answer UNIMPLEMENTED (grpc does,
for any method no handler serves).

Requests and answers travel as bytes: each method parses its own message (a malformed one is
INVALID_ARGUMENT, never an INTERNAL from a deserializer) and serializes its answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from service.dataplane import CallRecord
from service.errors import BadRequest, ServiceError
from service.grpc.messages import Context
from service.grpc.methods import Methods
from service.grpc.status import code_of, details_of, trailers_of
from service.observability.metrics import Metrics
from service.protocols.access import ADMIN, INFERENCE, PUBLIC, Access, Denial, Keys, single_bearer

log = logging.getLogger("invariant.grpc")
PROTOCOL = "grpc"  # the `protocol` label of the request metrics
INTERNAL = ServiceError("internal server error")  # status 500 -> INTERNAL

# request bytes, the call's context, its record (ModelInfer fills in the model and version) -> answer bytes
Call = Callable[[bytes, Context, CallRecord], Awaitable[bytes]]


@dataclass(frozen=True)
class Method:
    name: str
    access: Access
    call: Call


def method_table(methods: Methods) -> dict[str, Method]:
    """Every method served, by its full gRPC path (/inference.GRPCInferenceService/<name>)."""
    rows = (
        Method("ServerLive", PUBLIC, methods.server_live),
        Method("ServerReady", PUBLIC, methods.server_ready),
        Method("ModelReady", INFERENCE, methods.model_ready),
        Method("ServerMetadata", INFERENCE, methods.server_metadata),
        Method("ModelMetadata", INFERENCE, methods.model_metadata),
        Method("ModelInfer", INFERENCE, methods.model_infer),
        Method("RepositoryIndex", ADMIN, methods.repository_index),
        Method("RepositoryModelLoad", ADMIN, methods.repository_load),
        Method("RepositoryModelUnload", ADMIN, methods.repository_unload),
    )
    return {f"/{methods.service}/{row.name}": row for row in rows}


class Router:
    """The grpc.aio generic handler (grpc.GenericRpcHandler: a `service` method) of every method in the table;
    None (UNIMPLEMENTED) for any other."""

    def __init__(self, methods: Methods, keys: Keys, metrics: Metrics) -> None:
        self.table = method_table(methods)
        self.keys = keys
        self.metrics = metrics
        self._handlers = {path: self._handler(method) for path, method in self.table.items()}

    def service(self, handler_call_details: Any) -> Any:
        return self._handlers.get(handler_call_details.method)

    def _handler(self, method: Method) -> Any:
        counted = method.name == "ModelInfer"

        async def behaviour(raw: bytes, context: Context) -> bytes:
            denial = await _denial(self.keys, context, method.access) if self.keys.enabled else None
            if denial is not None:
                forbidden = denial.kind == "forbidden"
                code = grpc.StatusCode.PERMISSION_DENIED if forbidden else grpc.StatusCode.UNAUTHENTICATED
                await context.abort(code, denial.message)
            if counted:
                return await self._counted(method, raw, context)
            reply, error = await _outcome(method, raw, context, CallRecord(PROTOCOL))
            if error is not None:
                await _abort(context, error)
            return reply

        # No (de)serializers: the method gets the request's bytes and returns the answer's bytes.
        return grpc.unary_unary_rpc_method_handler(behaviour)

    async def _counted(self, method: Method, raw: bytes, context: Context) -> bytes:
        """The call, counted in the request metrics with the HTTP status its gRPC status stands for."""
        started = time.perf_counter()
        call = CallRecord(PROTOCOL)
        status = 500
        try:
            reply, error = await _outcome(method, raw, context, call)
            status = 200 if error is None else error.status_code
        except asyncio.CancelledError:  # the client went away or its deadline passed: nobody reads an answer
            status = 504 if _past_deadline(context) else 499
            raise
        finally:
            self.metrics.record_request(call.name, call.version, PROTOCOL, status, started)
        if error is not None:
            await _abort(context, error)
        return reply


async def _outcome(method: Method, raw: bytes, context: Context, call: CallRecord) -> tuple[bytes, ServiceError | None]:
    """(answer, None), or (b"", the error to send): context.abort raises, so it is called outside this."""
    try:
        return await method.call(raw, context, call), None
    except ServiceError as exc:
        return b"", exc
    except Exception:
        log.exception("unhandled error in gRPC %s", method.name)  # the method name: no client input
        return b"", INTERNAL


async def _abort(context: Context, error: ServiceError) -> None:
    await context.abort(code_of(error), details_of(error), trailers_of(error))


async def _denial(keys: Keys, context: Context, access: Access) -> Denial | None:
    """The key check of HTTP's Guard: two authorization entries are INVALID_ARGUMENT (HTTP's 400)."""
    values = [
        v.encode() if isinstance(v, str) else v for k, v in context.invocation_metadata() or () if k == "authorization"
    ]
    try:
        token = single_bearer(values)
    except BadRequest as exc:
        await _abort(context, exc)
        raise  # abort raised already; this line is never reached
    return keys.denial(token, access)


def _past_deadline(context: Context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0

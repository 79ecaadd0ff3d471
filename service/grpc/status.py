"""ServiceError (service/errors.py, which carries its HTTP status) -> gRPC status code: one table, so an error
means the same on both transports. Status details are the error's message, cut to a size that fits in the
trailers every HTTP/2 peer accepts."""

from __future__ import annotations

import grpc

from service.errors import ServiceError

HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,  # more rows than max_queue_rows: what gRPC says of a too-large message
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,  # the model's output is not finite for these inputs
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,  # not ready, or the queue is full (with retry-after): try again
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
MAX_DETAILS_CHARS = 2000  # grpc-message travels in the trailers (peers' header limits are 8-16 KiB)


def code_of(error: ServiceError) -> grpc.StatusCode:
    return HTTP_TO_GRPC.get(error.status_code, grpc.StatusCode.INTERNAL)


def details_of(error: ServiceError) -> str:
    message = error.message
    return message if len(message) <= MAX_DETAILS_CHARS else message[: MAX_DETAILS_CHARS - 3] + "..."


def trailers_of(error: ServiceError) -> tuple[tuple[str, str], ...]:
    """The error's HTTP headers that mean something to a gRPC client too: Retry-After of a full queue."""
    return tuple((name.lower(), value) for name, value in error.headers.items() if name.lower() == "retry-after")

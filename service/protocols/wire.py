"""The HTTP codecs' shared wire layer: bounded body reading, JSON parsing, JSON answers, model headers."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from service.dataplane.offload import OFFLOAD_BYTES
from service.dataplane.rows import MAX_DIGITS, ascii_int
from service.errors import (
    BadRequest,
    BodyTimeout,
    ClientGone,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from service.observability.metrics import Metrics
from service.protocols.compression import REQUEST_ENCODINGS, inflate

log = logging.getLogger("invariant.http")
# Scope keys our uvicorn protocol (service/http/protocol.py) sets: the connection's timer bounds the body;
# and it fired before the whole body came.
BODY_DEADLINE_KEY = "invariant.body_deadline"
BODY_LATE_KEY = "invariant.body_late"
# and it takes a whole answer as one message of this type (status, the encoded header lines, body).
WHOLE_ANSWER = "invariant.whole_answer"

Handler = Callable[[Request], Awaitable[Response]]


class BodyReader:
    """Reads a request body: bounded in size and time, decoded from gzip/deflate with a cap on the result.

    The one way a route gets its body, so every rule about bodies (413, 408, 415, a client that leaves)
    holds for every route alike. Time: under our uvicorn protocol (service/http/protocol.py) one timer per
    connection bounds headers and body together and marks the scope when it fires (`BODY_LATE_KEY`), so a
    body costs no timer of its own; under another server, one asyncio.timeout per body.
    """

    def __init__(self, limit: int, timeout_s: float, metrics: Metrics) -> None:
        self.limit = limit
        self.timeout_s = timeout_s
        self._disconnects = metrics.client_disconnects
        self._timeouts = metrics.body_timeouts

    async def read(self, request: Request) -> bytes:
        """The body of a framework route (Starlette's Request)."""
        return await self.read_raw(request.scope, request.receive)

    async def read_raw(self, scope: Scope, receive: Receive) -> bytes:
        """The body from the ASGI scope and receive: the inference routes' way (service/protocols/exchange.py)."""
        try:
            if BODY_DEADLINE_KEY in scope:  # the connection's timer bounds it (service/http/protocol.py)
                raw = await self._receive(scope, receive)
            else:
                async with asyncio.timeout(self.timeout_s):
                    raw = await self._receive(scope, receive)
        except TimeoutError:
            self._timeouts.inc()
            raise BodyTimeout(f"request body not received within {self.timeout_s:g} s") from None
        except ClientDisconnect:
            # A client that hangs up mid-body is an ordinary event, not a server error.
            self._disconnects.inc()
            log.debug("client disconnected before sending the whole body")
            raise ClientGone("client disconnected before sending the whole body") from None
        encoding = _header(scope, b"content-encoding")
        if encoding is None:
            return raw
        encoding = encoding.strip().lower()
        if encoding == "identity":
            return raw
        if encoding not in REQUEST_ENCODINGS:
            raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or deflate")
        if len(raw) < OFFLOAD_BYTES:
            return inflate(raw, encoding, self.limit)
        return await asyncio.to_thread(inflate, raw, encoding, self.limit)  # zlib releases the GIL

    async def _receive(self, scope: Scope, receive: Receive) -> bytes:
        """The raw body, refusing (413) anything over the limit before reading it where possible."""
        declared = _header(scope, b"content-length")
        if declared is not None:
            if declared.isascii() and declared.isdigit() and len(declared) > MAX_DIGITS:
                raise PayloadTooLarge(f"request body of {len(declared)}-digit length exceeds the limit")
            size = ascii_int(declared)
            if size is None:
                raise BadRequest(f"invalid Content-Length {declared!r}")
            if size > self.limit:
                raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {self.limit} bytes")
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the whole body in one message: the usual case
            if len(body) > self.limit:  # chunked transfer declares no length
                raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes")
            return body
        received = bytearray()
        while True:  # chunked transfer too: count as we go
            if message["type"] != "http.request":
                raise ClientDisconnect()
            received += message.get("body", b"")
            if len(received) > self.limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes")
            if not message.get("more_body", False):
                return bytes(received)
            if scope.get(BODY_LATE_KEY):  # the connection's timer fired while the body was still coming
                raise TimeoutError
            message = await receive()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON, except that NaN/Infinity literals parse (so the row check can name the row)."""
    if not raw:
        raise BadRequest("empty request body: expected a JSON object")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = _parse_lenient(raw)
    if not isinstance(parsed, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _parse_lenient(raw: bytes) -> Any:
    try:
        # Accepts NaN and Infinity, which orjson refuses. Integers too long for a float64 become floats
        # (inf), so the row check names them instead of numpy overflowing.
        return json.loads(raw, parse_int=_json_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def _json_int(text: str) -> int | float:
    return int(text) if len(text) <= 300 else float(text)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # orjson writes each float32 (widened exactly to float64) as the shortest decimal that reads back to
    # the same float64, so parsing the JSON and narrowing to float32 restores the exact bits.
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: ServiceError) -> Response:
    return json_response({"error": exc.message}, exc.status_code, exc.headers)

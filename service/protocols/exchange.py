"""The inference routes' hot path: raw ASGI in, raw ASGI out, with no framework object per request.

An inference handler takes an `Exchange` (the ASGI scope and receive, the path parameters, the dispatcher's
CallRecord) and returns a `Reply` (status, body bytes, header pairs already encoded); the dispatcher sends it
as two ASGI messages. Starlette's Request and Response cost more per request than decoding and batching one
row (py-spy, bench/run_bench.py at 64 connections), and the hot path needs none of what they offer.

What is the same for every answer of one model version (its X-Model-* headers, the start of a V1 answer)
is encoded once per version (`wire_of`), not per request.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from service.dataplane import CallRecord
from service.errors import ServiceError
from service.lifecycle.loader import ServedModel
from service.protocols.wire import WHOLE_ANSWER

Headers = list[tuple[bytes, bytes]]
JSON = b"application/json"
OCTETS = b"application/octet-stream"
REQUEST_ID = b"x-request-id"
MAX_CACHED_VERSIONS = 256  # wire_of's cache: cleared past this many versions (loads and unloads over time)


class Exchange:
    """One inference request as the handler sees it: headers and the query read on demand, from the scope."""

    __slots__ = ("call", "params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, params: dict[str, str], call: CallRecord) -> None:
        self.scope = scope
        self.receive = receive
        self.params = params
        self.call = call

    def header(self, name: bytes) -> str | None:
        """The first value of header `name` (lower case bytes), decoded as latin-1, or None."""
        for key, value in self.scope["headers"]:
            if key == name:  # uvicorn lower-cases header names
                return str(value.decode("latin-1"))
        return None

    def query(self, name: str) -> str | None:
        """The last value of query parameter `name`, as Starlette's query_params would give it, or None."""
        raw: bytes = self.scope.get("query_string", b"")
        if not raw:
            return None
        return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)).get(name)


@dataclass(slots=True)
class Reply:
    """An answer ready for the wire. `headers`: extra pairs (the model's), never content-type/-length."""

    body: bytes
    status: int = 200
    content_type: bytes = JSON
    headers: Headers | tuple[tuple[bytes, bytes], ...] = ()


def json_reply(payload: Any, status: int = 200, headers: Headers | tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    # orjson writes each float32 (widened exactly to float64) as the shortest decimal that reads back to
    # the same float64, so parsing the JSON and narrowing to float32 restores the exact bits.
    return Reply(orjson.dumps(payload), status, JSON, headers)


def error_reply(exc: ServiceError) -> Reply:
    headers = [(key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in exc.headers.items()]
    return json_reply({"error": exc.message}, exc.status_code, headers)


async def send_reply(send: Send, reply: Reply, request_id: str, whole_answer: bool = False) -> None:
    """The two ASGI messages of a whole-body answer (compression, if asked, wraps `send`: compression.py);
    `whole_answer`: one message to our own uvicorn protocol (WHOLE_ANSWER: service/http/protocol.py), whose
    header lines are encoded and checked here, once per version for the model's."""
    if whole_answer:
        lines = b"content-length: %d\r\ncontent-type: %s\r\n%s%s: %s\r\n" % (
            len(reply.body),
            reply.content_type,
            header_lines(reply.headers),
            REQUEST_ID,
            request_id.encode(),
        )  # the request id: checked printable ASCII, or made here (observability/logs.py)
        await send({"type": WHOLE_ANSWER, "status": reply.status, "headers": lines, "body": reply.body})
        return
    headers = [
        (b"content-length", str(len(reply.body)).encode()),
        (b"content-type", reply.content_type),
        *reply.headers,
        (REQUEST_ID, request_id.encode()),
    ]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def header_lines(headers: Headers | tuple[tuple[bytes, bytes], ...]) -> bytes:
    """b"name: value\r\n" per header, checked as uvicorn checks each header it sends; a version's headers
    (a tuple, the same object every answer) are encoded once."""
    if isinstance(headers, tuple):
        lines = _lines.get(headers)
        if lines is None:
            if len(_lines) >= MAX_CACHED_VERSIONS:
                _lines.clear()
            lines = _lines[headers] = _encoded_lines(headers)
        return lines
    return _encoded_lines(headers)


def _encoded_lines(headers: Headers | tuple[tuple[bytes, bytes], ...]) -> bytes:
    for name, value in headers:
        if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):  # uvicorn's own checks
            raise RuntimeError(f"invalid header {name!r}")
    return b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in headers)


_lines: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}


@dataclass(frozen=True)
class ModelWire:
    """The encoded parts every answer of one served version shares."""

    headers: tuple[tuple[bytes, bytes], ...]  # X-Model-Name, -Version, -Sha256, X-Replica, X-Numerics-Fingerprint
    version: str  # str(version), the `model_version` of every answer
    v1_head: bytes  # b'{"model_name":...,"model_version":...,"predictions":' : a V1 answer is this + rows + b"}"


# id(served) -> (a weak reference to it, replica, its wire). Weak: an unloaded version's memory (its weights,
# its executor) must go back when the registry drops it, not stay here.
_wires: dict[int, tuple[weakref.ref[ServedModel], str, ModelWire]] = {}


def wire_of(served: ServedModel, replica: str) -> ModelWire:
    """The version's ModelWire, built on its first answer and kept while that same object serves."""
    found = _wires.get(id(served))
    if found is not None and found[0]() is served and found[1] == replica:
        return found[2]
    if len(_wires) >= MAX_CACHED_VERSIONS:  # unloaded versions' entries: dropped wholesale, rebuilt on use
        _wires.clear()
    wire = _build_wire(served, replica)
    _wires[id(served)] = (weakref.ref(served), replica, wire)
    return wire


def _build_wire(served: ServedModel, replica: str) -> ModelWire:
    version = str(served.version)
    headers = tuple(
        (key.lower().encode(), value.encode("latin-1")) for key, value in model_headers(served, replica).items()
    )
    head = orjson.dumps({"model_name": served.name, "model_version": version, "predictions": None})
    return ModelWire(headers, version, head[: -len(b"null}")])


def model_headers(served: ServedModel, replica: str) -> dict[str, str]:
    return {
        "X-Model-Name": served.name,
        "X-Model-Version": str(served.version),
        "X-Model-Sha256": served.sha256,
        "X-Replica": replica,
        "X-Numerics-Fingerprint": served.numerics.fingerprint,
    }

"""What one connection can make a replica hold is bounded (issue 20, items 1, 2 and 9): request heads (bytes
and fields: 431, then the connection closes), requests sent ahead of their answers (the server stops reading),
and a chunked body's trailer (never merged into the headers the key check reads).

The head and trailer tests go through the shared server (a real `python -m service`); the pipelining test
looks inside a real uvicorn server in this process, serving a constant answer through the same protocol class,
because what is bounded there (the queue of parsed requests) is not visible from outside."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import orjson
import pytest
import uvicorn
from bad_input_helpers import Probe
from conftest import connect, free_port, read_until_closed
from starlette.types import Receive, Scope, Send
from waiting import wait_until

from service.http.protocol import FEED_SLICE_BYTES, LIMITS_KEY, BoundedHttpToolsProtocol, ConnectionLimits
from service.settings import Settings

DEFAULTS = Settings()
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"


def _assert_431(answer: bytes, reason: str) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert b"connection: close" in head
    assert orjson.loads(body) == {"error": f"request header fields too large: {reason}"}


def test_a_header_value_that_never_ends_is_431_at_the_byte_bound(probe: Probe) -> None:
    """httptools buffers an unfinished value itself: the bound counts bytes as they arrive. Before the fix
    the connection was only closed by the read timeout, with no answer, after the server had buffered it all.
    (A client that goes on sending after the 431 gets a reset instead: the server reads nothing more.)"""
    value = b"v" * (DEFAULTS.max_header_bytes + FEED_SLICE_BYTES)  # no end of line: the value never ends
    with connect(probe.server, 15) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + value)
        answer = read_until_closed(sock)
    _assert_431(answer, f"request head over {DEFAULTS.max_header_bytes} bytes")
    probe.expect_serving()


def test_more_header_fields_than_the_bound_is_431(probe: Probe) -> None:
    fields = b"".join(b"a%d: b\r\n" % index for index in range(DEFAULTS.max_header_fields))  # + Host: one over
    with connect(probe.server, 15) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer = read_until_closed(sock)
    _assert_431(answer, f"more than {DEFAULTS.max_header_fields} header fields")
    probe.expect_serving()


def test_a_head_at_both_bounds_is_served(probe: Probe) -> None:
    fields = b"".join(b"a%d: b\r\n" % index for index in range(DEFAULTS.max_header_fields - 3))  # + 3 below
    padding = b"X-Pad: " + b"p" * (DEFAULTS.max_header_bytes - 2 * FEED_SLICE_BYTES - len(fields)) + b"\r\n"
    with connect(probe.server, 15) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + fields + padding + b"Connection: close\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"


def test_many_pipelined_requests_are_all_answered_in_order(probe: Probe) -> None:
    """Holding bytes back while the queue is full loses nothing: 3,000 requests in one write, 3,000 answers."""
    count = 3000
    with connect(probe.server, 15) as sock:
        sock.sendall(LIVE * (count - 1) + LIVE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        answers = read_until_closed(sock)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == count
    assert answers.count(b"HTTP/1.1 ") == count


# ------------------------------------------------------------ inside a real uvicorn server, same protocol


async def _echo_header_names(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the names of the request's headers, read after its whole body (trailer included) arrived."""
    if scope["type"] == "lifespan":
        await receive()
        scope["state"][LIMITS_KEY] = ConnectionLimits.of(DEFAULTS)  # as service/http/app.py's Lifespan does
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    body = orjson.dumps([name.decode() for name, _ in scope["headers"]])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def inside_server() -> Iterator[uvicorn.Server]:
    config = uvicorn.Config(
        _echo_header_names, host="127.0.0.1", port=free_port(), http=BoundedHttpToolsProtocol, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_until("the in-process server started", lambda: server.started, timeout_s=30)
    yield server
    server.should_exit = True
    thread.join(timeout=30)


def test_a_client_that_never_reads_its_answers_holds_a_bounded_queue(inside_server: uvicorn.Server) -> None:
    """Before the fix, every request of each 64-256 KiB read was parsed and queued (a flood of 835k queued
    requests, 1.7 GB, in the issue); now the parser is fed only while the queue has room."""
    with socket.create_connection(("127.0.0.1", inside_server.config.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # answers back up soon
        flood = LIVE * 200_000  # 8 MB: more than every buffer between the two ends
        sender = threading.Thread(target=_send_ignoring_reset, args=(sock, flood), daemon=True)
        sender.start()
        protocol = wait_until("the server to stop reading the connection", lambda: _holding(inside_server))
        queued = len(protocol.pipeline)
        assert queued <= DEFAULTS.max_pipelined_requests + FEED_SLICE_BYTES // len(LIVE) + 1, queued
        assert protocol.flow.read_paused
        assert len(protocol._held) <= 4 * 1024 * 1024  # at most what reads before the pause brought
        sock.shutdown(socket.SHUT_RDWR)


def test_a_chunked_trailer_never_joins_the_headers(inside_server: uvicorn.Server) -> None:
    """uvicorn appends trailer fields to the request's header list, which a route (and the key check) may read
    only after the trailer arrived: a key sent only in a trailer was accepted when it came in the same segment.
    Here trailer fields are dropped."""
    request = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: Authorization\r\n"
        b"Connection: close\r\n\r\n2\r\n{}\r\n0\r\nAuthorization: Bearer from-the-trailer\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", inside_server.config.port), timeout=15) as sock:
        sock.sendall(request)  # one segment: the whole request is parsed before the app runs
        answer = read_until_closed(sock)
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2]) == ["host", "transfer-encoding", "trailer", "connection"]


def _holding(server: uvicorn.Server) -> BoundedHttpToolsProtocol | None:
    for protocol in list(server.server_state.connections):
        if isinstance(protocol, BoundedHttpToolsProtocol) and protocol.pipeline and protocol.flow.read_paused:
            return protocol
    return None


def _send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the test closes the socket under it
        sock.sendall(data)

"""uvicorn's httptools protocol with a bound on reading each request, headers and body.

uvicorn closes a keep-alive connection that stays idle, but a connection that sends its request headers
slowly (or part of them, then nothing) is held forever: 500 such sockets pin 500 descriptors. Here a
connection must finish each request, headers and body, within `read_timeout_s` of connecting or of its
previous response. One timer per request, the one uvicorn's own keep-alive bookkeeping already implies:
headers that do not come close the connection; a body that does not come marks the request's scope
(`BODY_LATE_KEY`) and wakes the route reading it, whose BodyReader answers 408. The body needs no timer of
its own on the hot path (an asyncio.timeout per request cost ~2% of the event loop in py-spy).

What one connection can make the server hold is bounded too (httptools and uvicorn set no limits):
- a request head (request line + header fields) of at most `max_header_bytes` and `max_header_fields`
  fields, else 431 and the connection closes. httptools keeps a header value it has not finished in its own
  buffer, out of reach of any callback, so the bytes are counted as they are fed, not per field;
- at most `max_pipelined_requests` requests waiting behind the one being answered: the bytes received are fed
  to the parser in slices of FEED_SLICE_BYTES, and feeding stops (reading from the socket too) while the queue
  is full, resuming as answers are written. A client that sends requests without reading the answers holds
  one read buffer, not a queue of parsed requests;
- fields in a chunked body's trailer are dropped: the headers a route (and the key check) reads are the
  header block's alone.

An inference answer goes out in one socket write: its cycle (WholeAnswerCycle) takes the status, the header
lines and the body as one message from the dispatcher (service/protocols/exchange.py `send_reply`).

uvicorn builds this class itself, once per connection, so its limits come from the app: the lifespan puts
a `ConnectionLimits` into uvicorn's app state (`LIMITS_KEY`) before the server accepts a connection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TypedDict, cast

import httptools
import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from service.protocols.wire import BODY_DEADLINE_KEY, BODY_LATE_KEY, WHOLE_ANSWER
from service.settings import Settings

log = logging.getLogger("invariant.protocol")
LIMITS_KEY = "invariant.connection_limits"
# Small enough that one slice holds few requests (a bare "GET / HTTP/1.1" request is 18 bytes: at most ~110
# past the queue bound), large enough that a single-row request is fed in one call.
FEED_SLICE_BYTES = 2048


@dataclass(frozen=True)
class ConnectionLimits:
    read_timeout_s: float
    max_header_bytes: int
    max_header_fields: int
    max_pipelined_requests: int

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            settings.read_timeout_s,
            settings.max_header_bytes,
            settings.max_header_fields,
            settings.max_pipelined_requests,
        )


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop httptools; the 431 is already written."""


DEFAULT_LIMITS = ConnectionLimits.of(Settings())  # an app that never ran its lifespan: the defaults


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _timer: asyncio.TimerHandle | None = None  # at _timer_due: the earliest deadline when it was set
    _timer_due = 0.0
    _read_deadline: float | None = None  # loop time by which the request being read must be in; None: no bound
    _idle_deadline: float | None = None  # loop time at which an idle keep-alive connection is closed
    _held = b""  # received, not fed to the parser yet (the queue of requests is full)
    _in_head = True  # the parser is inside a request head (or before one)
    _head_bytes = 0
    _head_fields = 0
    _refused = False

    @property
    def limits(self) -> ConnectionLimits:
        limits: ConnectionLimits = self.app_state.get(LIMITS_KEY, DEFAULT_LIMITS)
        return limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()

    def data_received(self, data: bytes) -> None:
        self._held = self._held + data if self._held else data
        self._feed_held()

    def _feed_held(self) -> None:
        """Feed what is held, a slice at a time, while the pipelined queue has room; stop reading when not."""
        limits = self.limits
        while self._held and not self.transport.is_closing():
            if len(self.pipeline) >= limits.max_pipelined_requests:
                self.flow.pause_reading()  # resumed by on_response_complete, which feeds the rest first
                return
            piece, self._held = self._held[:FEED_SLICE_BYTES], self._held[FEED_SLICE_BYTES:]
            self._feed(piece, limits)

    def _feed(self, piece: bytes, limits: ConnectionLimits) -> None:
        """uvicorn's data_received for one slice, except that a refused head (431 sent) gets no 400 after it."""
        if self._in_head:
            self._head_bytes += len(piece)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(piece)
        except httptools.HttpParserUpgrade:  # as uvicorn does (the dispatcher then closes a WebSocket: 1008)
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self._refused:
                log.debug("invalid HTTP request received")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._head_bytes > limits.max_header_bytes and not self._refused:
            self._refuse_head(f"request head over {limits.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._head_fields = True, 0, 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:  # a chunked body's trailer: never merged into the headers already read
            return
        self._head_fields += 1
        if self._head_fields > self.limits.max_header_fields:
            self._refuse_head(f"more than {self.limits.max_header_fields} header fields")
            raise HeadTooLarge  # stops the parser: feed_data raises HttpParserCallbackError
        super().on_header(name, value)

    def _refuse_head(self, reason: str) -> None:
        """431 and close: what the client sent so far is dropped, nothing more is read."""
        self._refused = True
        self._held = b""
        body = orjson.dumps({"error": f"request header fields too large: {reason}"})
        head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        length = b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self.transport.write(head + length + body)
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        # This request's body is bounded by the connection's timer (an extension key: not in uvicorn's TypedDict).
        self.scope[BODY_DEADLINE_KEY] = True  # type: ignore[literal-required]
        # uvicorn made the cycle and its task, which has not run yet: it sends through WholeAnswerCycle.send.
        self.cycle.__class__ = WholeAnswerCycle
        self.scope[WHOLE_ANSWER] = True  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.cycle.response_complete:  # else the rest of a body came after its answer: the timer
            self._disarm_read_timer()  # now runs for the next request's headers

    def on_response_complete(self) -> None:
        """uvicorn's (count, resume reading, start the next pipelined request or else allow the connection
        `timeout_keep_alive` idle), with both bounds kept as deadlines on the connection's one timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_deadline = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_deadline = self.loop.time() + self.timeout_keep_alive
        self._arm_read_timer()
        if self._held:
            self._feed_held()  # before the socket is read again, so what is held never grows past one read

    def _unset_keepalive_if_required(self) -> None:
        self._idle_deadline = None  # data came: the connection is no longer idle

    def connection_lost(self, exc: Exception | None) -> None:
        self._read_deadline = self._idle_deadline = None
        if self._timer is not None:  # cancelled for real: the loop must not hold a closed connection
            self._timer.cancel()
            self._timer = None
        self._held = b""
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        """The request now being read must be in by now + read_timeout_s. Per request this only moves
        deadlines: the connection's one timer, when it fires before them, re-arms itself (uvicorn's
        keep-alive call_later and our read call_later, each with a cancel, per request: 2.4% of the event
        loop at 64 connections in py-spy)."""
        self._read_deadline = self.loop.time() + self.limits.read_timeout_s
        self._set_timer()

    def _disarm_read_timer(self) -> None:
        self._read_deadline = None  # a pending timer finds no deadline and lapses

    def _set_timer(self) -> None:
        """The timer at the earliest deadline, unless one is pending no later than it (it re-arms on firing)."""
        read, idle = self._read_deadline, self._idle_deadline
        due = idle if read is None else read if idle is None else min(read, idle)
        if due is None or (self._timer is not None and self._timer_due <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_due = self.loop.call_at(due, self._timer_fired), due

    def _timer_fired(self) -> None:
        self._timer = None
        now = self.loop.time()
        if self._idle_deadline is not None and self._idle_deadline <= now:
            self._idle_deadline = None
            self.timeout_keep_alive_handler()
        if self._read_deadline is not None and self._read_deadline <= now:
            self._read_deadline = None
            self._read_timed_out()
        if not self.transport.is_closing():
            self._set_timer()

    def _read_timed_out(self) -> None:
        cycle = self.cycle
        waiting_for_headers = (cycle is None or cycle.response_complete) and not self.pipeline
        if waiting_for_headers and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request headers in %g s", self.limits.read_timeout_s)
            self.transport.close()
        elif cycle is not None and cycle.more_body and not cycle.response_complete:
            # The route reading the body answers 408 (BodyReader).
            cycle.scope[BODY_LATE_KEY] = True  # type: ignore[literal-required]
            cycle.message_event.set()


class WholeAnswerCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, taking one more message: WHOLE_ANSWER, an answer whose status,
    header lines and body are known at once (service/protocols/exchange.py `send_reply`, the inference
    routes), written in one socket write. uvicorn's send() for a start and a body message, restated for that
    case: the header lines come encoded and checked (once per version for the model's), and the two writes
    and two passes through send() were ~20 us of the loop's CPU per answer at 64 connections."""

    async def send(self, message: ASGISendEvent | WholeAnswer) -> None:
        if message["type"] != WHOLE_ANSWER:
            await super().send(cast(ASGISendEvent, message))
            return
        await self._send_whole(cast(WholeAnswer, message))

    async def _send_whole(self, message: WholeAnswer) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if self.response_started:
            raise RuntimeError("a whole answer after the response started")
        self.response_started = True
        self.waiting_for_100_continue = False
        content = [STATUS_LINE[message["status"]]]
        for name, value in self.default_headers:  # the server's own (date, server): uvicorn checked them
            content += [name, b": ", value, b"\r\n"]
        content.append(message["headers"])
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        if self.scope["method"] != "HEAD":
            content.append(message["body"])
        self.chunked_encoding = False
        self.expected_content_length = 0
        self.transport.write(b"".join(content))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


class WholeAnswer(TypedDict):
    type: str  # WHOLE_ANSWER
    status: int
    headers: bytes  # b"name: value\r\n" lines, content-length and content-type included
    body: bytes

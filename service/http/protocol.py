"""uvicorn's httptools protocol with a bound on reading each request, headers and body.

uvicorn closes a keep-alive connection that stays idle, but a connection that sends its request headers
slowly (or part of them, then nothing) is held forever: 500 such sockets pin 500 descriptors. Here a
connection must finish each request, headers and body, within `read_timeout_s` of connecting or of its
previous response. One timer per request, the one uvicorn's own keep-alive bookkeeping already implies:
headers that do not come close the connection; a body that does not come marks the request's scope
(`BODY_LATE_KEY`) and wakes the route reading it, whose BodyReader answers 408. The body needs no timer of
its own on the hot path (an asyncio.timeout per request cost ~2% of the event loop in py-spy).

uvicorn builds this class itself, once per connection, so its limits come from the app: the lifespan puts
a `ConnectionLimits` into uvicorn's app state (`LIMITS_KEY`) before the server accepts a connection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.protocols.wire import BODY_DEADLINE_KEY, BODY_LATE_KEY
from service.settings import Settings

log = logging.getLogger("invariant.protocol")
LIMITS_KEY = "invariant.connection_limits"


@dataclass(frozen=True)
class ConnectionLimits:
    read_timeout_s: float

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(settings.read_timeout_s)


DEFAULT_LIMITS = ConnectionLimits.of(Settings())  # an app that never ran its lifespan: the defaults


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _read_timer: asyncio.TimerHandle | None = None

    @property
    def limits(self) -> ConnectionLimits:
        limits: ConnectionLimits = self.app_state.get(LIMITS_KEY, DEFAULT_LIMITS)
        return limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # This request's body is bounded by the connection's timer (an extension key: not in uvicorn's TypedDict).
        self.scope[BODY_DEADLINE_KEY] = True  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.cycle.response_complete:  # else the rest of a body came after its answer: the timer
            self._disarm_read_timer()  # now runs for the next request's headers

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        self._disarm_read_timer()
        self._read_timer = self.loop.call_later(self.limits.read_timeout_s, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        cycle = self.cycle
        waiting_for_headers = (cycle is None or cycle.response_complete) and not self.pipeline
        if waiting_for_headers and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request headers in %g s", self.limits.read_timeout_s)
            self.transport.close()
        elif cycle is not None and cycle.more_body and not cycle.response_complete:
            # The route reading the body answers 408 (BodyReader).
            cycle.scope[BODY_LATE_KEY] = True  # type: ignore[literal-required]
            cycle.message_event.set()

"""uvicorn's httptools protocol with a bound on reading request headers.

uvicorn closes a keep-alive connection that stays idle, but a connection that sends its request headers
slowly (or part of them, then nothing) is held forever: 500 such sockets pin 500 descriptors. Here a
connection must finish each request's headers within `read_timeout_s` of connecting or of its previous
response; bodies have the same bound in the routes (BodyReader, 408).

uvicorn builds this class itself, once per connection, so its limits come from the app: the lifespan puts
a `ConnectionLimits` into uvicorn's app state (`LIMITS_KEY`) before the server accepts a connection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
    _header_timer: asyncio.TimerHandle | None = None

    @property
    def limits(self) -> ConnectionLimits:
        limits: ConnectionLimits = self.app_state.get(LIMITS_KEY, DEFAULT_LIMITS)
        return limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.limits.read_timeout_s, self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        waiting_for_headers = (self.cycle is None or self.cycle.response_complete) and not self.pipeline
        if waiting_for_headers and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request headers in %g s", self.limits.read_timeout_s)
            self.transport.close()

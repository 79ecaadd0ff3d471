"""uvicorn's httptools protocol with a bound on reading request headers.

uvicorn closes a keep-alive connection that stays idle, but a connection that sends its request headers
slowly (or part of them, then nothing) is held forever: 500 such sockets pin 500 descriptors. Here a
connection must finish each request's headers within `read_timeout_s` of connecting or of its previous
response; bodies have the same bound in the routes (BodyReader, 408).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

log = logging.getLogger("invariant.protocol")


@functools.cache
def _read_timeout_s() -> float:
    # Built once per process from the same INVARIANT_* variables as the app (uvicorn builds this class).
    return Settings().read_timeout_s


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    _header_timer: asyncio.TimerHandle | None = None

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
        self._header_timer = self.loop.call_later(_read_timeout_s(), self._headers_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        waiting_for_headers = (self.cycle is None or self.cycle.response_complete) and not self.pipeline
        if waiting_for_headers and not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request headers in %g s", _read_timeout_s())
            self.transport.close()

"""The gRPC server of one process: one grpc.aio server on the event loop uvicorn runs, started by the HTTP app's
lifespan once every model was tried (the process is then ready on both ports) and stopped before the models
close.

It is created in `start`, inside the serving process: with `--workers N` uvicorn spawns each worker and each
builds its own, after the fork; no gRPC object ever exists in the supervisor (a process that forks after
grpc.aio started crashes in the child, grpc/grpc#29586). Each worker then listens on the same port with
SO_REUSEPORT, and the kernel hands each new connection to one worker: one client channel (one HTTP/2
connection) talks to one worker for its whole life, and many channels spread over the workers. With one
worker SO_REUSEPORT stays off, so a port already taken fails the start instead of being shared.
"""

from __future__ import annotations

import logging

import grpc

from service.dataplane import DataPlane
from service.grpc.methods import Methods
from service.grpc.servicer import Router
from service.observability.metrics import Metrics
from service.protocols.access import Keys
from service.settings import Settings

log = logging.getLogger("invariant.grpc")
# Calls in progress in one process (beyond: RESOURCE_EXHAUSTED from grpc itself). Each holds its request's
# bytes (at most max_body_bytes) until answered; rows wait in the model's bounded queue besides.
MAX_CONCURRENT_RPCS = 1024
MAX_STREAMS_PER_CONNECTION = 256  # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS a client may open on one connection


class GrpcServer:
    """Started and stopped by the app's lifespan (service/http/app.py Transport); off when grpc_port is 0."""

    def __init__(self, plane: DataPlane, metrics: Metrics, settings: Settings) -> None:
        self.plane = plane
        self.metrics = metrics
        self.settings = settings
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host  # an IPv6 literal
        return f"{host}:{self.settings.grpc_port}"

    async def start(self) -> None:
        if self.settings.grpc_port == 0:
            return
        server = grpc.aio.server(options=self.options(), maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS)
        server.add_generic_rpc_handlers((Router(Methods(self.plane), Keys(self.settings), self.metrics),))
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise RuntimeError(
                f"gRPC cannot listen on {self.address} ({exc}): choose another --grpc-port, or 0 to turn gRPC off"
            ) from None
        await server.start()
        self._server = server
        log.info("gRPC (inference.GRPCInferenceService) listening on %s", self.address)

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.settings.max_body_bytes),  # the HTTP body limit
            ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ("grpc.so_reuseport", 1 if self.settings.workers > 1 else 0),
        ]

    async def stop(self) -> None:
        """Refuse new calls, give those in progress up to the request timeout, then close."""
        if self._server is not None:
            await self._server.stop(self.settings.request_timeout_s)
            self._server = None

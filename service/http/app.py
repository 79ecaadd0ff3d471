"""The app factory: `create_app(settings)` wires every part once, from one `Settings` value, into the ASGI
app uvicorn runs. No work at import, and nothing here reads the environment.

    registry (lifecycle) -> data plane -> protocol handlers -> route table -> dispatcher (+ lifespan)

Models load and self-test in the lifespan, before the process accepts connections. With several workers
sharing one socket, a worker still loading accepts nothing, so no request lands on a process whose models
are not verified yet.

Other transports (the gRPC server, service/grpc/) run beside HTTP in the same process and event loop: the
composition root (service/cli.py) hands their factories in, and the lifespan starts them once the models are
loaded and stops them before the models close. This floor never imports them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from service import __version__
from service.dataplane import DataPlane
from service.engine.executor_factory import resolve_placement
from service.engine.numerics import pin_numerics
from service.engine.numerics_env import portable_numerics_missing
from service.http.auth import Guard
from service.http.dispatch import Dispatcher
from service.http.docs import DocsApi
from service.http.openapi import build_openapi
from service.http.protocol import LIMITS_KEY, ConnectionLimits
from service.http.routes import Route, route_table
from service.lifecycle.memory import CollectorSchedule
from service.lifecycle.registry import ModelRegistry, ServingExecutorFactory
from service.observability.logs import AccessLog
from service.observability.metrics import Metrics
from service.receipts import Receipts
from service.settings import Settings

log = logging.getLogger("invariant.app")
EXIT_COMPUTE_FAILED = 70  # EX_SOFTWARE


class Transport(Protocol):
    """A second way in beside HTTP, over the same data plane: started on the serving process's event loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Built in the serving process (after uvicorn spawned it): picklable, e.g. a class, for --workers N.
TransportFactory = Callable[[DataPlane, Metrics, Settings], Transport]


@dataclass(frozen=True)
class App:
    """The ASGI application: the dispatcher, and the parts tests and the bench may look at."""

    dispatcher: Dispatcher
    settings: Settings
    registry: ModelRegistry
    plane: DataPlane
    routes: tuple[Route, ...]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.dispatcher(scope, receive, send)


def create_app(
    settings: Settings,
    executor_factory: ServingExecutorFactory | None = None,
    transports: Sequence[TransportFactory] = (),
) -> App:
    """`executor_factory` is for the bench only: it serves through another executor once the model has
    passed its self-test (see ServingExecutorFactory); no setting reaches it. `transports`: servers beside
    HTTP (gRPC), started by the lifespan."""
    resolve_placement(settings.device, settings.dtype)  # a device/dtype this machine cannot honour fails here
    missing = portable_numerics_missing(os.environ) if settings.portable_numerics else []
    if missing:
        raise RuntimeError(
            f"portable numerics need {' '.join(missing)} in the environment before torch is imported: start the "
            "server with `python -m service --portable-numerics` (the CLI sets them) or set them yourself"
        )
    metrics = Metrics(settings.chunk_rows if isinstance(settings.chunk_rows, int) else None)
    registry = ModelRegistry(settings, metrics, executor_factory, on_fatal=request_restart)
    receipts = Receipts(settings, metrics)
    plane = DataPlane(registry, settings, receipts)
    docs = DocsApi()
    routes = route_table(plane, metrics, settings, docs)
    docs.document = build_openapi(routes, __version__)
    others = tuple(make(plane, metrics, settings) for make in transports)
    lifespan = Lifespan(settings, registry, receipts, others)
    access_log = AccessLog(settings.access_log)
    dispatcher = Dispatcher(routes, Guard(settings), metrics, lifespan, plane.call_record, access_log)
    return App(dispatcher, settings, registry, plane, routes)


class Lifespan:
    """ASGI lifespan: pin numerics, load every model and start the other transports before the server accepts
    a connection; on shutdown stop them, drain and stop, then exit non-zero if a compute thread died (so a
    supervisor starts a fresh process). The receipts log's writer thread runs from before the first request
    to after the last answer."""

    def __init__(
        self, settings: Settings, registry: ModelRegistry, receipts: Receipts, transports: Sequence[Transport] = ()
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.receipts = receipts
        self.transports = tuple(transports)
        self.collector = CollectorSchedule()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            pin_numerics(self.settings.threads)
            self.receipts.start()
            await _interruptible(self.registry.start())
            for transport in self.transports:
                await transport.start()
            self.collector.start()  # full collections off the request path (service/lifecycle/memory.py)
        except BaseException as exc:
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            raise
        if "state" in scope:  # uvicorn hands this dict to every connection's protocol object
            scope["state"][LIMITS_KEY] = ConnectionLimits.of(self.settings)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        self.collector.stop()
        for transport in self.transports:
            await transport.stop()
        await self.registry.close()
        await asyncio.to_thread(self.receipts.close)  # every answered row's receipt written and fsync'd
        if self.registry.fatal:  # drained; exit non-zero so that a supervisor starts a fresh process
            log.critical("exiting with status %d after: %s", EXIT_COMPUTE_FAILED, self.registry.fatal)
            logging.shutdown()
            os._exit(EXIT_COMPUTE_FAILED)
        await send({"type": "lifespan.shutdown.complete"})


async def _interruptible(start: Coroutine[Any, Any, None]) -> None:
    """Run start-up so that SIGTERM or SIGINT cancels it. Until the app is up, uvicorn only records a signal
    (it waits for the lifespan first), so a slow or hung load would make the process ignore both. uvicorn's
    handlers still run: the signal is recorded, and re-raised once the failed start-up returns."""
    task = asyncio.ensure_future(start)
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        await task
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def stop_starting(sig: int, frame: FrameType | None) -> None:
        log.warning("signal %d during start-up: not waiting for the model loads", sig)
        loop.call_soon_threadsafe(task.cancel)
        handler = previous[signal.Signals(sig)]
        if callable(handler):
            handler(sig, frame)

    for sig in previous:
        signal.signal(sig, stop_starting)
    try:
        await task
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def request_restart(reason: str) -> None:
    """A compute thread died: shut down gracefully (SIGTERM, as a supervisor would), then exit non-zero
    (lifespan), so that uvicorn's worker supervisor, docker or systemd starts a fresh process."""
    log.critical("stopping the process so that its supervisor restarts it: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)

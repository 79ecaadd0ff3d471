"""Running the app: one explicit uvicorn `Config` built from one `Settings` value, as uvicorn itself hands a
Config to each protocol. Nothing is passed through environment variables: with `--workers N` each worker
process receives the settings as one serialized value inside the (pickled) app factory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import multiprocessing
import os
import signal
import sys

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from service.http.factory import AppFactory
from service.http.protocol import BoundedHttpToolsProtocol
from service.observability.logs import log_config
from service.settings import Settings

log = logging.getLogger("invariant.server")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def uvicorn_config(
    settings: Settings, executor_factory: str | None = None, transports: tuple[str, ...] = ()
) -> uvicorn.Config:
    return uvicorn.Config(
        AppFactory(settings, executor_factory, transports),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level, settings.log_format),  # one configuration, uvicorn's too
        log_level=settings.log_level,
        access_log=False,  # the dispatcher writes the access lines (route templates, request ids)
        loop="uvloop",
        lifespan="on",
        proxy_headers=False,  # nothing here reads the client address: one ASGI layer less per request
        http=BoundedHttpToolsProtocol,  # httptools, with bounds on reading headers
        # Drain: every accepted request is answered or times out (read, then request timeout) before this.
        timeout_graceful_shutdown=math.ceil(max(settings.request_timeout_s, settings.read_timeout_s)) + 5,
    )


def serve(settings: Settings, executor_factory: str | None = None, transports: tuple[str, ...] = ()) -> None:
    """Serve until SIGTERM/SIGINT: in this process, or under uvicorn's supervisor with N worker processes.
    `executor_factory`: bench only, "module:function" of a ServingExecutorFactory (see AppFactory).
    `transports`: "module:class" of servers beside HTTP (gRPC), built and started in each serving process."""
    config = uvicorn_config(settings, executor_factory, transports)
    server = uvicorn.Server(config)
    if settings.workers > 1:
        socket = config.bind_socket()
        try:
            Multiprocess(config, sockets=[socket]).run()
        finally:
            socket.close()
        return
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # the lifespan or the bind failed (logged): uvicorn's own exit status for it
        sys.exit(STARTUP_FAILURE)


def exit_with_parent() -> None:
    """SIGTERM this worker when its supervisor dies (even by `kill -9`): orphaned workers would go on
    holding the port, and a restarted server would fail with "address already in use"."""
    parent = multiprocessing.parent_process()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive their parent", ctypes.get_errno())
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)

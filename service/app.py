"""The app factory. No work at import: models load and self-test in the lifespan, before the process
accepts connections. With several workers sharing one socket, a worker still loading accepts nothing, so no
request lands on a process whose models are not verified yet."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException
from starlette.responses import Response

from service import __version__
from service.auth import Guard
from service.compression import CompressResponses
from service.docs import DocsApi
from service.errors import ServiceError
from service.executor_factory import resolve_placement
from service.hotpath import FrontDoor
from service.http import error_response, json_response
from service.inference import Inference
from service.metrics import Metrics
from service.numerics import pin_numerics
from service.numerics_env import portable_numerics_missing
from service.openapi import build_openapi
from service.registry import ModelRegistry, ServingExecutorFactory
from service.routes import route_table
from service.settings import Settings

log = logging.getLogger("invariant.app")
EXIT_COMPUTE_FAILED = 70  # EX_SOFTWARE
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def create_app(settings: Settings | None = None, executor_factory: ServingExecutorFactory | None = None) -> FastAPI:
    """`executor_factory` is for the bench only: it serves through another executor once the model has
    passed its self-test (see ServingExecutorFactory); no setting reaches it."""
    settings = settings or Settings()
    resolve_placement(settings.device, settings.dtype)  # a device/dtype this machine cannot honour fails here
    missing = portable_numerics_missing(os.environ) if settings.portable_numerics else []
    if missing:
        raise RuntimeError(
            f"portable numerics need {' '.join(missing)} in the environment before torch is imported: start the "
            "server with `python -m service --portable-numerics` (the CLI sets them) or set them yourself"
        )
    metrics = Metrics(settings.chunk_rows if isinstance(settings.chunk_rows, int) else None)
    registry = ModelRegistry(settings, metrics, executor_factory, on_fatal=request_restart)
    inference = Inference(registry, settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pin_numerics(settings.threads)
        await registry.start()
        yield
        await registry.close()
        if registry.fatal:  # drained; exit non-zero so that a supervisor starts a fresh process
            log.critical("exiting with status %d after: %s", EXIT_COMPUTE_FAILED, registry.fatal)
            logging.shutdown()
            os._exit(EXIT_COMPUTE_FAILED)

    # FastAPI 0.165 reads its OpenTelemetry settings from os.environ on every request; we export Prometheus.
    telemetry_off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    # FastAPI's own docs are off: /openapi.json and /docs are rows of the route table (docs.py, openapi.py).
    app = FastAPI(
        title="invariant-serve",
        version=__version__,
        lifespan=lifespan,
        telemetry=telemetry_off,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.registry = registry
    app.state.settings = settings
    _install_error_handlers(app)
    _install_routes(app, inference, metrics, settings)
    app.add_middleware(CompressResponses)  # outermost: every answer, hot route or not
    return app


def request_restart(reason: str) -> None:
    """A compute thread died: shut down gracefully (SIGTERM, as a supervisor would), then exit non-zero
    (lifespan), so that uvicorn's worker supervisor, docker or systemd starts a fresh process."""
    log.critical("stopping the process so that its supervisor restarts it: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_routes(app: FastAPI, inference: Inference, metrics: Metrics, settings: Settings) -> None:
    """FastAPI's router and the front door, both from the one route table (routes.py)."""
    docs = DocsApi()
    app.state.routes = routes = route_table(inference, metrics, settings, docs)
    docs.document = build_openapi(routes, __version__)
    for route in routes:
        app.router.add_route(route.path, route.handler, methods=[route.method], include_in_schema=False)
    # Outside FastAPI's router: no request reaches a route, through the front door or FastAPI, unchecked.
    app.add_middleware(FrontDoor, routes=routes, guard=Guard(settings), answer_hot=settings.front_door)


def app_from_environment() -> FastAPI:
    """Factory for uvicorn worker processes: settings come from INVARIANT_* variables."""
    settings = Settings()
    configure_logging(settings.log_level)  # spawned workers do not inherit the parent's logging setup
    if multiprocessing.parent_process() is not None:  # a worker of --workers N
        exit_with_parent()
    return create_app(settings)


def exit_with_parent() -> None:
    """SIGTERM this worker when its supervisor dies (even by `kill -9`): orphaned workers would go on
    holding the port, and a restarted server would fail with "address already in use"."""
    parent = multiprocessing.parent_process()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): workers may outlive their parent", ctypes.get_errno())
    if parent is not None and os.getppid() != parent.pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response({"error": str(exc.detail)}, exc.status_code, dict(exc.headers or {}))

    async def validation_error(_request: Request, exc: Exception) -> Response:
        return json_response({"error": f"invalid request: {exc}"}, 400)

    async def unexpected_error(_request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return json_response({"error": "internal server error"}, 500)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)

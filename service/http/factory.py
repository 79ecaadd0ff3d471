"""The app factory each server process calls: picklable and light, because uvicorn's supervisor pickles it
into every worker process it spawns, and a worker must answer the supervisor's health check within seconds
of starting. So this module imports no torch and no app code: `__call__`, run inside the worker once its
health-check thread is up, imports and builds the app from the one serialized `Settings` value."""

from __future__ import annotations

import importlib
import multiprocessing
from typing import TYPE_CHECKING, Any

from service.observability.logs import configure_logging
from service.settings import Settings

if TYPE_CHECKING:
    from service.http.app import App


class AppFactory:
    def __init__(
        self, settings: Settings, executor_factory: str | None = None, transports: tuple[str, ...] = ()
    ) -> None:
        self.settings_json = settings.model_dump_json()
        # Bench only: "module:function" of a ServingExecutorFactory, imported in the worker (not pickled).
        self.executor_factory = executor_factory
        # "module:class" of each server beside HTTP (gRPC): imported, built and started in the worker only, so
        # no gRPC object exists before uvicorn spawns it (a fork after grpc.aio started crashes the child).
        self.transports = transports

    def __call__(self) -> App:
        from service.http.app import create_app
        from service.http.server import exit_with_parent

        settings = Settings.model_validate_json(self.settings_json)
        configure_logging(
            settings.log_level, settings.log_format
        )  # spawned workers do not inherit the parent's logging setup
        if multiprocessing.parent_process() is not None:  # a worker of --workers N
            exit_with_parent()
        wrap = None if self.executor_factory is None else _imported(self.executor_factory)
        return create_app(settings, wrap, tuple(_imported(name) for name in self.transports))


def _imported(qualified: str) -> Any:
    """The object named by "module:attribute"."""
    module, _, name = qualified.partition(":")
    return getattr(importlib.import_module(module), name)

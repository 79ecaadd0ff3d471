"""Bench only: our server serving through the variable-shape executor (bench/variable_shape_executor.py), to
measure what the fixed shape costs. Not a setting: this script builds the app with an executor factory, and
the model still has to pass its self-test with the real fixed-shape executor first.

    python bench/variable_shape.py --repository DIR --port N [any `python -m service` flag]

Module-level imports stay light: each uvicorn worker process re-imports this file before it answers the
supervisor's health check, so torch and the app are imported only inside the functions.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def app_from_environment() -> FastAPI:
    from variable_shape_executor import variable_shape

    from service.app import configure_logging, create_app
    from service.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings, executor_factory=variable_shape)


if __name__ == "__main__":
    from service.cli import main

    main(sys.argv[1:], app_factory="variable_shape:app_from_environment")

"""`python -m service` / `invariant-serve`: flags override INVARIANT_* variables, which override defaults."""

from __future__ import annotations

import argparse
import os
import tempfile

import uvicorn

from service.executor_factory import resolve_placement
from service.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="invariant-serve",
        description="Serve checkpoints so that every prediction is bitwise independent of the request batch. "
        "Every flag can also be set as an INVARIANT_<NAME> environment variable.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        else:
            parser.add_argument(flag, default=None, help=f"{field.description or name} (default: {field.default})")
    return parser


def main(argv: list[str] | None = None, app_factory: str = "service.app:app_from_environment") -> None:
    """`app_factory`: the import string uvicorn builds each worker's app from (the bench passes its own)."""
    given = {key: value for key, value in vars(_parser().parse_args(argv)).items() if value is not None}
    # Worker processes rebuild Settings from the environment, so flags travel as INVARIANT_* variables.
    for key, value in given.items():
        os.environ[f"INVARIANT_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    try:
        settings = Settings()
        resolve_placement(settings.device, settings.dtype)
    except ValueError as exc:
        raise SystemExit(f"invariant-serve: error: {exc}") from None
    if settings.workers > 1:
        # Each worker keeps its own metrics; prometheus-client sums them through files in this folder.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="invariant-metrics-"))
    uvicorn.run(
        app_factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )

"""One logging configuration for uvicorn and invariant-serve, as text or one JSON object per line, and the
access log: one line per request, written by the dispatcher once the status is known.

What a line may hold: values the server defines (route templates, known model names, versions, statuses,
counts, durations) and the request id, which is either generated here or a client's X-Request-Id that was
checked to be short printable ASCII. Never a key, a raw path, a query or an input value: an unmatched path
is logged as "-", an unknown model as "<unknown>" (the data plane's label).
"""

from __future__ import annotations

import logging
import logging.config
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson

ACCESS_LOGGER = "invariant.access"
REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(rb"[!-~]{1,%d}" % MAX_REQUEST_ID_CHARS)  # printable ASCII, no spaces
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_FIELDS_KEY = "fields"  # the `extra` key access lines carry their fields under
LogFormat = str  # "text" or "json" (Settings.log_format)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the access fields, and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, _FIELDS_KEY, None)
        if isinstance(fields, dict):  # an access line: its fields are the message
            line["message"] = "request"
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The `logging.config.dictConfig` of the process: uvicorn's loggers and ours share one handler and
    format (uvicorn is given this same dict, so it does not install its own)."""
    formatter: dict[str, Any] = {"()": JsonFormatter} if log_format == "json" else {"format": _TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    shared = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "loggers": {
            **{name: dict(shared) for name in ("uvicorn", "uvicorn.error", "invariant")},
            # uvicorn's own access lines hold the raw path and query: never written (the dispatcher's are).
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
        },
        "root": {"handlers": ["default"], "level": level.upper()},
    }


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    logging.config.dictConfig(log_config(level, log_format))


def request_id_of(raw_headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is 1-128 printable ASCII characters, else a new random one."""
    for key, value in raw_headers:
        if key.lower() == b"x-request-id":
            if _REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(8)


class AccessLog:
    """Writes the access lines; `enabled` False (--no-access-log) writes none."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._log = logging.getLogger(ACCESS_LOGGER)

    def record(self, fields: dict[str, Any], started: float) -> None:
        """`fields`: method, route, status, request_id, and for inference model, version, rows, queue_ms,
        compute_ms. Adds duration_ms."""
        if not self.enabled or not self._log.isEnabledFor(logging.INFO):
            return
        fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        # makeRecord + handle: a logger.info() without its caller lookup (the line's place in the code is
        # always this one); the text form is built only if a text formatter asks for the message.
        record = self._log.makeRecord(
            ACCESS_LOGGER, logging.INFO, __file__, 0, _AccessMessage(fields), (), None, extra={_FIELDS_KEY: fields}
        )
        self._log.handle(record)


class _AccessMessage:
    """The text form of an access line (`key=value ...`), made when a formatter asks for it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.fields.items())

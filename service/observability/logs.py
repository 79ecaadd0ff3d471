"""One logging configuration for uvicorn and invariant-serve, as text or one JSON object per line, and the
access log: one line per request, written by the dispatcher once the status is known.

What a line may hold: values the server defines (route templates, known model names, versions, statuses,
counts, durations) and the request id, which is either generated here or a client's X-Request-Id that was
checked to be short printable ASCII. Never a key, a raw path, a query or an input value: an unmatched path
is logged as "-", an unknown model as "<unknown>" (the data plane's label).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import random
import re
import secrets
import time
from collections.abc import Callable
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
        fields = getattr(record, _FIELDS_KEY, None)
        if isinstance(fields, dict) and not record.exc_info:  # an access line: its fields are the message
            return self.format_access(record.created, record.levelname, record.name, fields)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()

    def format_access(self, created: float, level: str, logger: str, fields: dict[str, Any]) -> str:
        """An access line from its parts: what format() makes of an access LogRecord (AccessLog's fast path)."""
        when = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        return orjson.dumps({"time": when, "level": level, "logger": logger, "message": "request", **fields}).decode()


class TextFormatter(logging.Formatter):
    """The text format, with the time's text made once per second instead of once per line (strftime and
    localtime were ~3% of the event loop's time at 64 connections with the access log on)."""

    _second = -1
    _prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self._prefix},{int(msecs):03d}"

    def formats_access(self) -> bool:
        """Whether format_access gives this formatter's line: the default text format, no date format."""
        return self._fmt == _TEXT_FORMAT and self.datefmt is None

    def format_access(self, created: float, level: str, logger: str, fields: dict[str, Any]) -> str:
        """What format() makes of an access LogRecord with these parts (AccessLog's fast path)."""
        return f"{self._time(created, _msecs(created))} {level} {logger}: {_message(fields)}"


class TurnBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The access lines' handler: lines written while an event loop runs wait for the end of the loop's
    iteration and go out in one write (one write and flush per line were ~6% of the loop's time at 64
    connections). Elsewhere, and on flush/close, lines are written at once.

    AccessLog's lines wait unformatted, as AccessParts (time, a function making the fields, duration), and
    are made and formatted together at the end of the iteration: formatting one line between two requests'
    work took 15 us of the loop's CPU in the server at 64 connections (5 us in a tight loop), and the access
    log cost ~20% of the requests per second."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str | AccessParts] = []  # lines, or an access line's parts
        self._scheduled = False
        # No format of ours (text or JSON) shows a thread, process or multiprocessing name; without these
        # switches each LogRecord looks all three up (getpid is a syscall): ~3% of the loop at 64 connections.
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._queue(line)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_locked()
        finally:
            self.release()

    def emit_access(self, parts: AccessParts) -> None:
        """An access line's parts (AccessLog's fast path): made into fields and formatted by this handler's
        formatter (one that has format_access) when the line is written, in order with emit()'s lines."""
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._queue(parts)

    def _queue(self, line: str | AccessParts) -> None:
        """Under the lock: the line waits for the end of the loop's iteration (written now without a loop)."""
        self._pending.append(line)
        if self._scheduled:
            return
        try:
            asyncio.get_running_loop().call_soon(self._write_pending)
            self._scheduled = True
        except RuntimeError:  # no loop in this thread: now
            self._write_locked()

    def _write_pending(self) -> None:
        self.flush()

    def _write_locked(self) -> None:
        self._scheduled = False
        if self._pending:
            pending, self._pending = self._pending, []
            self.stream.write("".join([self._line(entry) + self.terminator for entry in pending]))
        super().flush()

    def _line(self, entry: str | AccessParts) -> str:
        if isinstance(entry, str):
            return entry
        formatter: JsonFormatter | TextFormatter = self.formatter  # type: ignore[assignment]  # AccessLog checked
        created, fields, duration_s = entry
        try:
            return formatter.format_access(created, "INFO", ACCESS_LOGGER, with_duration(fields(), duration_s))
        except Exception as exc:  # one bad line must not take the others with it
            return f"access line not written: {type(exc).__name__}"


# An access line before it is made: (time.time() when recorded, its fields, the request's seconds).
AccessParts = tuple[float, Callable[[], dict[str, Any]], float]


def with_duration(fields: dict[str, Any], duration_s: float) -> dict[str, Any]:
    fields["duration_ms"] = round(duration_s * 1000, 3)
    return fields


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The `logging.config.dictConfig` of the process: uvicorn's loggers and ours share one format (uvicorn
    is given this same dict, so it does not install its own) and one stream; the access lines get their own
    handler on it, which writes once per event-loop iteration (TurnBufferedHandler)."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"()": TextFormatter, "format": _TEXT_FORMAT}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    access = {"()": TurnBufferedHandler, "formatter": "default", "stream": "ext://sys.stderr"}
    shared = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler, "access": access},
        "loggers": {
            **{name: dict(shared) for name in ("uvicorn", "uvicorn.error", "invariant")},
            ACCESS_LOGGER: {"handlers": ["access"], "level": level.upper(), "propagate": False},
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
        if key == b"x-request-id":  # uvicorn lower-cases header names
            if _REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return _new_request_id()


_ids = random.Random(secrets.randbits(128))
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.randbits(128)))  # a forked worker: its own ids


def _new_request_id() -> str:
    """16 hex digits. Unique, not secret: a PRNG seeded from the OS per process costs a fraction of a
    secrets.token_hex call (a getrandom syscall each, ~2% of the loop at 64 connections)."""
    return f"{_ids.getrandbits(64):016x}"


class AccessLog:
    """Writes the access lines; `enabled` False (--no-access-log) writes none.

    With the logging configuration this process installs (log_config: the access logger's one handler a
    TurnBufferedHandler, our formatter, no filters), a line is formatted and queued directly, skipping the
    LogRecord, the logger's and handler's filter and lock steps (~5 of the event loop's 10% in the access log
    at 64 connections, py-spy); it is the same line (tests/test_access_log.py). Any other configuration (a
    handler or filter added by an embedding application) takes logging's own path."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._log = logging.getLogger(ACCESS_LOGGER)

    def record(self, fields: Callable[[], dict[str, Any]], started: float) -> None:
        """`fields()`: method, route, status, request_id, and for inference model, version, rows, queue_ms,
        compute_ms; called once, when the line is made (on the direct path, at the end of the loop's
        iteration: nothing it reads may change once the answer is sent). Adds duration_ms, measured now."""
        if not self.enabled or not self._log.isEnabledFor(logging.INFO):
            return
        duration_s = time.perf_counter() - started
        handler = self._direct_handler()
        if handler is not None:
            handler.emit_access((time.time(), fields, duration_s))
            return
        fields_now = with_duration(fields(), duration_s)
        # makeRecord + handle: a logger.info() without its caller lookup (the line's place in the code is
        # always this one); the text form is built only if a text formatter asks for the message.
        record = self._log.makeRecord(
            ACCESS_LOGGER,
            logging.INFO,
            __file__,
            0,
            _AccessMessage(fields_now),
            (),
            None,
            extra={_FIELDS_KEY: fields_now},
        )
        self._log.handle(record)

    def _direct_handler(self) -> TurnBufferedHandler | None:
        """The access logger's one handler when a line may skip logging's machinery (see the class), else None."""
        logger = self._log
        handlers = logger.handlers
        if len(handlers) != 1 or logger.filters or logger.propagate:
            return None
        handler = handlers[0]
        if type(handler) is not TurnBufferedHandler or handler.filters or handler.level > logging.INFO:
            return None
        formatter = handler.formatter
        if type(formatter) is JsonFormatter or (type(formatter) is TextFormatter and formatter.formats_access()):
            return handler
        return None


def _msecs(created: float) -> float:
    """LogRecord.msecs of a record created at `created` (logging's own formula)."""
    return int((created - int(created)) * 1000) + 0.0


class _AccessMessage:
    """The text form of an access line (`key=value ...`), made when a formatter asks for it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return _message(self.fields)


MAX_TEMPLATES = 64  # access lines have two sets of keys (with a model and without); a bound all the same
_templates: dict[tuple[str, ...], str] = {}


def _message(fields: dict[str, Any]) -> str:
    """`key=value ...`: one %-format with a template made once per set of keys, not an f-string per field
    (a third less time per line in a tight loop)."""
    keys = tuple(fields)
    template = _templates.get(keys)
    if template is None:
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        template = _templates[keys] = " ".join(key.replace("%", "%%") + "=%s" for key in keys)
    return template % tuple(fields.values())

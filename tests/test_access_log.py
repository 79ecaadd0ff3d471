"""Logs: one configuration for uvicorn and the service (`--log-format json`: every line a JSON object), one
access line per request from the dispatcher, X-Request-Id accepted or generated and echoed (and the V2 `id`
when the body has none), and never a key, a raw path or an input value in any line."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, start_server, stop_server, write_keys
from waiting import wait_until

from service.observability.logs import (
    ACCESS_LOGGER,
    AccessLog,
    JsonFormatter,
    TextFormatter,
    TurnBufferedHandler,
    _message,
    request_id_of,
)

KEY = "sk-test-KEYSECRET-0123456789"
SECRET_VALUE = 1234.5678125  # an input value: never in a log line
SECRET_PATH = "PATHSECRET"


@pytest.mark.parametrize(
    ("given", "kept"),
    [(b"abc-123", True), (b"x" * 128, True), (b"x" * 129, False), (b"has space", False), (b"\xff", False)],
)
def test_a_request_id_is_kept_only_when_short_printable_ascii(given: bytes, kept: bool) -> None:
    chosen = request_id_of([(b"x-request-id", given)])
    assert (chosen == given.decode("latin-1")) is kept
    if not kept:
        assert len(chosen) == 16
        assert set(chosen) <= set("0123456789abcdef")


FIELDS = {"method": "POST", "route": "/v1/models/{name}:predict", "status": 200, "request_id": "r-1", "rows": 3}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter(TEXT_FORMAT)])
@pytest.mark.parametrize("created", [1_764_806_400.0, 1_764_806_400.9996, 1_764_806_401.25])
def test_the_direct_access_line_is_the_line_logging_makes(formatter: logging.Formatter, created: float) -> None:
    record = logging.getLogger(ACCESS_LOGGER).makeRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 0, " ".join(f"{k}={v}" for k, v in FIELDS.items()), (), None,
        extra={"fields": dict(FIELDS)},
    )  # fmt: skip
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    direct = formatter.format_access(created, "INFO", ACCESS_LOGGER, dict(FIELDS))  # type: ignore[attr-defined]
    assert direct == formatter.format(record)


def test_an_access_message_is_key_equals_value_in_field_order() -> None:
    fields = {**FIELDS, "queue_ms": 0.085, "compute_ms": 1.0, "model": "m%s", "odd%key": "x"}
    expected = " ".join(f"{key}={value}" for key, value in fields.items())
    assert _message(fields) == expected
    assert _message(fields) == expected  # the template made on the first line serves the second alike
    assert _message(dict(FIELDS)) == "method=POST route=/v1/models/{name}:predict status=200 request_id=r-1 rows=3"


@pytest.fixture
def access_logger() -> Any:
    """The access logger as log_config sets it up, on a StringIO; its previous state restored after."""
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (logger.handlers[:], logger.filters[:], logger.propagate, logger.level)
    yield logger
    logger.handlers, logger.filters, logger.propagate = saved[0], saved[1], saved[2]
    logger.setLevel(saved[3])


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter(TEXT_FORMAT)])
def test_access_lines_take_the_direct_path_only_under_our_own_configuration(
    access_logger: logging.Logger, formatter: logging.Formatter
) -> None:
    stream = io.StringIO()
    handler = TurnBufferedHandler(stream)
    handler.setFormatter(formatter)
    access_logger.handlers, access_logger.filters, access_logger.propagate = [handler], [], False
    access_logger.setLevel(logging.INFO)
    access = AccessLog(True)
    assert access._direct_handler() is handler
    access.record(lambda: dict(FIELDS), 0.0)  # no running loop: written at once
    access_logger.addFilter(lambda record: True)  # a filter an embedding application added: logging's path
    assert access._direct_handler() is None
    access.record(lambda: dict(FIELDS), 0.0)
    access_logger.addFilter(logging.Filter("elsewhere"))  # and the filter is honoured: this line is dropped
    access.record(lambda: dict(FIELDS), 0.0)
    direct, through_logging = stream.getvalue().splitlines()
    assert _without_times(direct) == _without_times(through_logging)
    assert "/v1/models/{name}:predict" in direct


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_servers_own_logging_configuration_takes_the_direct_path(log_format: str) -> None:
    """In a child process: configure_logging replaces the whole process's logging configuration."""
    program = (
        "from service.observability.logs import AccessLog, TurnBufferedHandler, configure_logging\n"
        f"configure_logging('info', {log_format!r})\n"
        "print(type(AccessLog(True)._direct_handler()).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "TurnBufferedHandler"


def _without_times(line: str) -> str:
    """The line without its time stamp and duration (which differ between two calls)."""
    line = re.sub(r'"time":"[^"]+"|^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}', "TIME", line)
    return re.sub(r"duration_ms.{1,3}[0-9.e-]+", "DURATION", line)


@pytest.fixture(scope="module")
def json_server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    write_keys(keys, KEY + "\n")
    running = start_server(
        tiny_repository, tmp_path_factory.mktemp("logs"), "--log-format", "json", "--api-keys-file", str(keys)
    )
    yield running
    stop_server(running)


def _infer(http: httpx.Client, path: str, rows: int, headers: dict[str, str]) -> httpx.Response:
    body = {"inputs": [{"name": "input", "shape": [rows, 16], "datatype": "FP32", "data": [SECRET_VALUE] * 16 * rows}]}
    return http.post(path, json=body, headers=headers)


@pytest.mark.slow
def test_every_request_gets_one_json_access_line_with_no_key_path_or_input(json_server: RunningServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    plan: list[tuple[str, int, dict[str, str]]] = []
    for i in range(120):  # bounded load: 120 inference requests from 4 threads
        plan.append(("/v2/models/tiny/infer", 1 + i % 7, {**auth, "X-Request-Id": f"load-{i}"}))
    plan.append((f"/v2/models/{SECRET_PATH}/infer?token={SECRET_PATH}", 1, auth))  # unknown model: 404
    plan.append(("/v2/models/tiny/infer", 1, {"Authorization": f"Bearer {KEY}x"}))  # wrong key: 401
    plan.append((f"/nothing/{SECRET_PATH}", 1, auth))  # no route: 404
    with json_server.client() as http, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda item: _infer(http, *item), plan))
        generated = _infer(http, "/v2/models/tiny/infer", 2, auth)
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 120 + [404, 401, 404]
    for i, response in enumerate(responses[:120]):
        assert response.headers["X-Request-Id"] == f"load-{i}"
        assert response.json()["id"] == f"load-{i}"  # the V2 id, absent from the body, is the request id
    assert generated.json()["id"] == generated.headers["X-Request-Id"]
    assert len(generated.headers["X-Request-Id"]) == 16

    # Access lines are written once per event-loop turn, after the answers of that turn went out: the last
    # line may land a moment after the last answer.
    def logged() -> tuple[list[str], list[Any], list[Any], list[Any]] | None:
        lines = json_server.log().splitlines()
        parsed = [json.loads(line) for line in lines]  # every line, uvicorn's too, is one JSON object
        access = [line for line in parsed if line["logger"] == "invariant.access"]
        inference = [line for line in access if line["route"] != "/v2/health/ready"]  # the readiness polls
        return (lines, parsed, access, inference) if len(inference) >= len(plan) + 1 else None

    lines, parsed, access, inference = wait_until("every request's access line", logged, timeout_s=30)
    assert any(line["logger"].startswith("uvicorn") for line in parsed)
    assert len(inference) == len(plan) + 1
    by_id = {line["request_id"]: line for line in inference}
    assert by_id["load-3"] | {"duration_ms": 0, "queue_ms": 0, "compute_ms": 0} == {
        "time": by_id["load-3"]["time"], "level": "INFO", "logger": "invariant.access",
        "message": by_id["load-3"]["message"], "method": "POST", "route": "/v2/models/{name}/infer", "status": 200,
        "request_id": "load-3", "protocol": "v2", "model": "tiny", "version": "1", "rows": 4,
        "queue_ms": 0, "compute_ms": 0, "duration_ms": 0,
    }  # fmt: skip
    assert by_id["load-3"]["compute_ms"] > 0
    unknown = [line for line in inference if line["status"] == 404]
    assert sorted(line["route"] for line in unknown) == ["-", "/v2/models/{name}/infer"]
    assert [line["model"] for line in unknown if line["route"] != "-"] == ["<unknown>"]
    text = "\n".join(lines)
    for secret in (KEY, "KEYSECRET", SECRET_PATH, "token=", repr(SECRET_VALUE), "1234.56"):
        assert secret not in text
    print(f"\naccess log: {len(parsed)} JSON lines parsed, {len(access)} access lines")

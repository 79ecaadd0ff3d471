"""Logs: one configuration for uvicorn and the service (`--log-format json`: every line a JSON object), one
access line per request from the dispatcher, X-Request-Id accepted or generated and echoed (and the V2 `id`
when the body has none), and never a key, a raw path or an input value in any line."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningServer, start_server, stop_server, write_keys
from waiting import wait_until

from service.observability.logs import request_id_of

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

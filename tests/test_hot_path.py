"""The inference routes' raw-ASGI hot path (service/protocols/exchange.py) and the framework routes share one
dispatcher: keys, body limits (size, time, decompression), the metrics with the status actually sent, the
access line and X-Request-Id hold on both paths alike. Bodies are bounded in time by the connection's read
timer under our uvicorn protocol, and by one asyncio.timeout under any other ASGI server."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from bad_input_helpers import ROW
from conftest import RunningServer, connect, read_until_closed, start_server, stop_server, write_keys
from test_auth import BODIES as AUTH_BODIES

from service.http.app import create_app
from service.settings import Settings

API_KEY = "client-key-0123456789abcdef"
LIMIT = 4096  # --max-body-bytes of the server here

V1 = ("/v1/models/tiny:predict", {"instances": [ROW]})
V2 = ("/v2/models/tiny/infer", {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": ROW}]})
RECEIPTS = ("/v2/receipts/verify", AUTH_BODIES["ReceiptVerifyRequest"])  # a framework route with a body
HOT = {"v1": V1, "v2": V2}
BOTH = {"v1 (hot)": V1, "v2 (hot)": V2, "receipts verify (framework)": RECEIPTS}


@pytest.fixture(scope="module")
def keyed(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("hot-keys")
    write_keys((folder / "api.keys"), f"{API_KEY}\n")
    write_keys((folder / "receipt.keys"), "receipt-key-0123456789abcdef\n")  # so that receipts verify
    flags = ["--api-keys-file", str(folder / "api.keys"), "--max-body-bytes", str(LIMIT), "--read-timeout-s", "1"]
    flags += ["--receipts-key-file", str(folder / "receipt.keys")]
    server = start_server(tiny_repository, folder, *flags, "--log-format", "json")
    yield server
    stop_server(server)


def post(server: RunningServer, path: str, content: bytes, **headers: str) -> httpx.Response:
    headers.setdefault("Content-Type", "application/json")
    return httpx.post(server.url + path, content=content, headers=headers, timeout=30)


def authorized(**headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}", **headers}


@pytest.mark.parametrize("route", list(BOTH))
def test_both_paths_refuse_a_missing_or_unknown_key_and_echo_the_request_id(keyed: RunningServer, route: str) -> None:
    path, body = BOTH[route]
    raw = json.dumps(body).encode()
    missing = post(keyed, path, raw, **{"X-Request-Id": "no-key-1"})
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing API key: send the header Authorization: Bearer <key>"}
    assert missing.headers["X-Request-Id"] == "no-key-1"
    unknown = post(keyed, path, raw, Authorization="Bearer not-a-key-0123456789")
    assert unknown.status_code == 401
    assert unknown.json() == {"error": "invalid API key"}
    allowed = post(keyed, path, raw, **authorized(**{"X-Request-Id": "with-key-1"}))
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["X-Request-Id"] == "with-key-1"


@pytest.mark.parametrize("route", list(BOTH))
def test_both_paths_refuse_a_body_over_the_limit_declared_streamed_inflated(keyed: RunningServer, route: str) -> None:
    path, _ = BOTH[route]
    big = b'{"pad": "' + b"x" * LIMIT + b'"}'
    declared = post(keyed, path, big, **authorized())
    assert declared.status_code == 413
    assert declared.json() == {"error": f"request body of {len(big)} bytes exceeds the limit of {LIMIT} bytes"}

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length, counted as it comes
        yield big[:1000]
        yield big[1000:]

    streamed = httpx.post(keyed.url + path, content=chunks(), headers=authorized(), timeout=30)
    assert streamed.status_code == 413
    assert streamed.json() == {"error": f"request body exceeds the limit of {LIMIT} bytes"}
    bomb = post(keyed, path, gzip.compress(b" " * (LIMIT * 50)), **authorized(**{"Content-Encoding": "gzip"}))
    assert bomb.status_code == 413
    assert bomb.json() == {"error": f"decompressed request body exceeds the limit of {LIMIT} bytes"}
    odd = post(keyed, path, b"{}", **authorized(**{"Content-Encoding": "br"}))
    assert odd.status_code == 415


@pytest.mark.parametrize("route", list(BOTH))
def test_both_paths_answer_408_to_a_body_that_never_comes(keyed: RunningServer, route: str) -> None:
    path, _ = BOTH[route]
    with connect(keyed) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "request body not received within 1 s"}


@pytest.mark.parametrize("protocol", list(HOT))
def test_hot_path_counts_the_status_sent_and_logs_one_line(keyed: RunningServer, protocol: str) -> None:
    path, body = HOT[protocol]
    before = _count(keyed, protocol, "400")
    bad = post(keyed, path, b"[1, 2]", **authorized(**{"X-Request-Id": f"bad-{protocol}"}))
    assert bad.status_code == 400
    assert bad.json() == {"error": "request body must be a JSON object, got list"}
    assert _count(keyed, protocol, "400") == before + 1
    good = post(keyed, path, json.dumps(body).encode(), **authorized(**{"Accept-Encoding": "gzip"}))
    assert good.status_code == 200
    assert good.headers["X-Model-Name"] == "tiny"
    assert good.headers["X-Model-Version"] == "1"
    assert good.headers["Content-Type"] == "application/json"
    line = next(entry for entry in _access_lines(keyed) if entry.get("request_id") == f"bad-{protocol}")
    assert line["status"] == 400
    assert line["protocol"] == protocol
    assert line["route"] == ("/v1/models/{name}:predict" if protocol == "v1" else "/v2/models/{name}/infer")


def test_v2_binary_answer_on_the_hot_path_carries_its_header_length(keyed: RunningServer) -> None:
    body = {**V2[1], "outputs": [{"name": "class_index", "parameters": {"binary_data": True}}]}
    answer = post(keyed, V2[0], json.dumps(body).encode(), **authorized())
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/octet-stream"
    size = int(answer.headers["Inference-Header-Content-Length"])
    header = json.loads(answer.content[:size])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert len(answer.content) == size + 8


def test_without_our_protocol_one_timeout_per_body_answers_408(tiny_repository: Path) -> None:
    """Under another ASGI server (no connection timer marks the scope) the BodyReader's own timeout holds."""
    app = create_app(Settings(repository=tiny_repository, read_timeout_s=0.2))
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "method": "POST", "path": "/v1/models/tiny:predict", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }  # fmt: skip

    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()  # the body never comes
        return {}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    asyncio.run(asyncio.wait_for(app(scope, never, send), 30))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {"error": "request body not received within 0.2 s"}


def _count(server: RunningServer, protocol: str, status: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    pattern = rf'^invariant_requests_total{{[^}}]*protocol="{protocol}"[^}}]*status="{status}"[^}}]*}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


def _access_lines(server: RunningServer) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in server.log().splitlines()]
    return [line for line in parsed if line["logger"] == "invariant.access"]

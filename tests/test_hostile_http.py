"""Defects a hostile client found (issue 11), each through real HTTP against the shared tiny server: the
answer is a clean 4xx (never a 500 or a traceback), metrics stay bounded, and the server serves on."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any
from urllib.parse import urlparse

import pytest
from bad_input_helpers import BINARY_HEADER, ROW, Probe, tensor

LONG_DIGITS = "1" * 5000  # past Python's 4,300-digit limit for int(str)


# ------------------------------------------------------------------------------- defect 1: bounded labels


def _version_labels(metrics_text: str) -> set[str]:
    series = re.findall(r'^invariant_request[a-z_]*\{(model="tiny"[^}]*)\}', metrics_text, re.MULTILINE)
    assert series  # the requests were counted
    return {re.search(r'version="([^"]*)"', labels).group(1) for labels in series}  # type: ignore[union-attr]


def test_junk_version_strings_never_become_metric_labels(probe: Probe) -> None:
    for index in range(20):
        response = probe.http.post(f"/v1/models/tiny/versions/x{index}:predict", json={"instances": [ROW]})
        assert response.status_code == 404
        response = probe.http.post(f"/v2/models/tiny/versions/{index + 7}/infer", json={"inputs": [tensor()]})
        assert response.status_code == 404
    labels = _version_labels(probe.http.get("/metrics").text)
    assert labels <= {"1", "unknown"}, labels
    assert "unknown" in labels


# ----------------------------------------------------------------------- defect 2: huge digit strings


def test_version_of_more_than_4300_digits_is_404(probe: Probe) -> None:
    for path in (f"/v1/models/tiny/versions/{LONG_DIGITS}:predict", f"/v2/models/tiny/versions/{LONG_DIGITS}/infer"):
        response = probe.http.post(path, json={"instances": [ROW], "inputs": [tensor()]})
        assert response.status_code == 404, response.text
        assert response.json()["error"].startswith("model 'tiny' has no version '1111")
    response = probe.http.get(f"/v2/models/tiny/versions/{LONG_DIGITS}/ready")
    assert response.status_code == 404
    probe.expect_serving()


def test_inference_header_length_of_more_than_4300_digits_is_400(probe: Probe) -> None:
    response = probe.http.post("/v2/models/tiny/infer", content=b"{}", headers={BINARY_HEADER: LONG_DIGITS})
    probe.expect_error(response, 400, f"invalid {BINARY_HEADER} '{LONG_DIGITS}' for a 2-byte body")


def test_content_length_of_more_than_4300_digits_is_refused(probe: Probe) -> None:
    """httptools may refuse such a header itself (400, connection closed); the app must never answer 500."""
    answer = _raw_exchange(
        probe,
        b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + LONG_DIGITS.encode() + b"\r\n\r\n{}",
    )
    assert answer.split(b"\r\n", 1)[0] in {b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 413 Request Entity Too Large"}
    probe.expect_serving()


def _raw_exchange(probe: Probe, request: bytes, timeout_s: float = 10.0) -> bytes:
    url = urlparse(probe.server.url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            part = sock.recv(65536)
            if not part:
                break
            received += part
        return received


# ---------------------------------------------------------------------- defect 9: KServe V1 liveness


def test_kserve_v1_liveness_at_root_is_200(probe: Probe) -> None:
    response = probe.http.get("/")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "alive"}


# ------------------------------------------------------------------- defect 11: GET on a predict route


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/tiny:predict",
        "/v1/models/tiny/versions/1:predict",
        "/v2/models/tiny/infer",
        "/v2/models/tiny/versions/1/infer",
    ],
)
def test_get_on_a_predict_route_is_405(probe: Probe, path: str) -> None:
    response = probe.http.get(path)
    probe.expect_error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST"


# ---------------------------------------------------------------------- defect 12: V2 JSON data types


@pytest.mark.parametrize(
    ("datatype", "value", "message"),
    [
        ("INT64", 0.5, "input 'input' row 0: element 0.5 is not an INT64 value"),
        ("INT32", 2**40, f"input 'input' row 0: element {2**40} is out of range for INT32"),
        ("INT64", 2**63, f"input 'input' row 0: element {2**63} is out of range for INT64"),
        ("INT32", 1.0, "input 'input' row 0: element 1.0 is not an INT32 value"),
    ],
)
def test_v2_integer_tensor_with_a_mismatched_value_is_400(
    probe: Probe, datatype: str, value: Any, message: str
) -> None:
    data: list[Any] = [1] * 32
    data[3] = value
    probe.expect_error(probe.v2({"inputs": [tensor(datatype=datatype, data=data)]}), 400, message)


def test_v2_integer_tensor_with_integers_serves(probe: Probe) -> None:
    for datatype in ("INT32", "INT64"):
        response = probe.v2({"inputs": [tensor(datatype=datatype, data=[3] * 32)]})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"inputs": [tensor()], "parameters": {"binary_data_output": "false"}},
            "request: \"binary_data_output\" must be true or false, got 'false'",
            id="request-flag-string",
        ),
        pytest.param(
            {"inputs": [tensor()], "parameters": {"binary_data_output": 1}},
            'request: "binary_data_output" must be true or false, got 1',
            id="request-flag-int",
        ),
        pytest.param(
            {"inputs": [tensor()], "outputs": [{"name": "logits", "parameters": {"binary_data": "no"}}]},
            "output 'logits': \"binary_data\" must be true or false, got 'no'",
            id="output-flag-string",
        ),
    ],
)
def test_v2_non_boolean_binary_flags_are_400(probe: Probe, body: dict[str, Any], message: str) -> None:
    probe.expect_error(probe.v2(body), 400, message)


def test_v2_boolean_binary_flag_false_answers_json(probe: Probe) -> None:
    response = probe.v2({"inputs": [tensor()], "parameters": {"binary_data_output": False}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"


# ------------------------------------------------------------------- defect 7: disconnect mid-body


def test_client_disconnect_mid_body_is_a_debug_event_not_an_error(probe: Probe) -> None:
    before = _counter(probe, "invariant_client_disconnects_total")
    body = json.dumps({"instances": [ROW] * 50}).encode()
    url = urlparse(probe.server.url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        time.sleep(0.2)  # the server is now waiting for the rest of the body
    deadline = time.monotonic() + 10
    while _counter(probe, "invariant_client_disconnects_total") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _counter(probe, "invariant_client_disconnects_total") == before + 1
    log = probe.server.log_path.read_bytes()[probe.log_offset :]
    assert b"unhandled error" not in log
    assert b"ERROR" not in log


def _counter(probe: Probe, name: str) -> float:
    text = probe.http.get("/metrics").text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# ------------------------------------------------------------- defect 4: refuse before decoding


def test_v2_shape_beyond_the_queue_is_413_before_its_data_is_decoded(probe: Probe) -> None:
    body = {"inputs": [tensor(shape=[9000, 16], data="never decoded")]}
    probe.expect_error(probe.v2(body), 413, "request has 9000 rows, more than max_queue_rows=8192")


def test_v1_instances_beyond_the_queue_are_413_before_the_rows_are_checked(probe: Probe) -> None:
    body = json.dumps({"instances": [[]] * 8193}).encode()
    probe.expect_error(probe.v1(body), 413, "request has 8193 rows, more than max_queue_rows=8192")


def test_large_v1_body_beyond_the_queue_is_413_and_a_malformed_one_400(probe: Probe) -> None:
    """The codec parses and validates the whole request (beside the event loop: it is large) before any model
    lookup, so a truncated body is malformed (400) whatever its size; a whole one with more rows than the queue
    can ever hold is 413 before any row is decoded."""
    rows = ", ".join([json.dumps(ROW)] * 9000)
    truncated = ('{"instances": [' + rows + "]").encode()
    assert len(truncated) > 256 * 1024
    response = probe.v1(truncated)
    assert response.status_code == 400
    assert response.json()["error"].startswith("malformed JSON: ")
    probe.expect_error(probe.v1(truncated + b"}"), 413, "request has 9000 rows, more than max_queue_rows=8192")


def test_large_v1_body_within_the_queue_serves(probe: Probe) -> None:
    response = probe.v1(json.dumps({"instances": [ROW] * 3000}).encode())
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3000

"""One test per bad-input class, through real HTTP against the shared tiny server: each gets its 4xx status
and `{"error": "..."}` naming the problem, never a 500 or a traceback in the log, and the server answers the
next good request with 200."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import pytest
from bad_input_helpers import (
    BINARY_HEADER,
    LIMIT,
    NOT_FINITE,
    ROW,
    ROW_TEXT,
    Probe,
    instances,
    row_with,
    tensor,
)

from service.dataplane.rows import rows_from_nested
from service.errors import BadRequest


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/models/nope:predict"),
        ("GET", "/v1/models/nope"),
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
        ("POST", "/v2/models/nope/infer"),
    ],
)
def test_unknown_model_is_404(probe: Probe, method: str, path: str) -> None:
    body = {"instances": [ROW]} if "v1" in path else {"inputs": [tensor()]}
    response = probe.http.request(method, path, json=body if method == "POST" else None)
    probe.expect_error(response, 404, "unknown model 'nope'; available: ['tiny', 'tinycnn']")


@pytest.mark.parametrize("version", ["9", "0", "abc", "-1", "1.0", "01x"])
def test_unknown_or_non_integer_version_is_404(probe: Probe, version: str) -> None:
    message = f"model 'tiny' has no version {version!r}; available: [1]"
    v1 = probe.http.post(f"/v1/models/tiny/versions/{version}:predict", json={"instances": [ROW]})
    probe.expect_error(v1, 404, message)
    v2 = probe.http.post(f"/v2/models/tiny/versions/{version}/infer", json={"inputs": [tensor()]})
    probe.expect_error(v2, 404, message)
    probe.expect_error(probe.http.get(f"/v2/models/tiny/versions/{version}/ready"), 404, message)


def test_known_version_serves(probe: Probe) -> None:
    response = probe.http.post("/v1/models/tiny/versions/1:predict", json={"instances": [ROW]})
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "1"


def test_unicode_digit_version_is_404(probe: Probe) -> None:
    response = probe.http.post("/v1/models/tiny/versions/%C2%B2:predict", json={"instances": [ROW]})
    probe.expect_error(response, 404, "model 'tiny' has no version '²'; available: [1]")


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/nope", 404, "Not Found"),
        ("POST", "/v1/models/tiny/explain", 404, "Not Found"),
        ("GET", "/v3/models/tiny", 404, "Not Found"),
        ("PUT", "/v1/models/tiny:predict", 405, "Method Not Allowed"),
        ("GET", "/v2/models/tiny/infer", 405, "Method Not Allowed"),
        ("DELETE", "/v2/health/ready", 405, "Method Not Allowed"),
        ("POST", "/v2/models/tiny/ready", 405, "Method Not Allowed"),
    ],
)
def test_unknown_route_and_wrong_method(probe: Probe, method: str, path: str, status: int, message: str) -> None:
    probe.expect_error(probe.http.request(method, path), status, message)


# --------------------------------------------------------------------------------------------- V1 bodies


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"", "empty request body: expected a JSON object", id="empty-body"),
        pytest.param(
            b'{"instances": [[1, 2',
            "malformed JSON: Expecting ',' delimiter: line 1 column 21 (char 20)",
            id="truncated-json",
        ),
        pytest.param(
            b"{'instances': []}",
            "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
            id="single-quotes",
        ),
        pytest.param(b"\xff\xfe{}", "malformed JSON: Expecting value: line 1 column 1 (char 0)", id="not-utf8"),
        pytest.param(b"[[1, 2]]", "request body must be a JSON object, got list", id="body-is-list"),
        pytest.param(b'"instances"', "request body must be a JSON object, got str", id="body-is-string"),
        pytest.param(b"null", "request body must be a JSON object, got NoneType", id="body-is-null"),
        pytest.param(b"{}", 'request body must have "instances": a list of rows', id="no-instances"),
        pytest.param(
            b'{"inputs": [[1]]}', 'request body must have "instances": a list of rows', id="inputs-not-instances"
        ),
        pytest.param(b'{"instances": 3}', '"instances" must be a list of rows, got int', id="instances-int"),
        pytest.param(b'{"instances": {"a": 1}}', '"instances" must be a list of rows, got dict', id="instances-dict"),
        pytest.param(b'{"instances": []}', '"instances" is empty: send at least one row', id="empty-instances"),
    ],
)
def test_v1_malformed_body_is_400(probe: Probe, body: bytes, message: str) -> None:
    probe.expect_error(probe.v1(body), 400, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            instances(ROW_TEXT, json.dumps(ROW[:15])),
            "instances row 1: has 15 values, expected 16 (shape [16])",
            id="short-row",
        ),
        pytest.param(
            instances(json.dumps(ROW[:1])), "instances row 0: has 1 values, expected 16 (shape [16])", id="one-value"
        ),
        pytest.param(
            instances(ROW_TEXT, ROW_TEXT, json.dumps([*ROW, 1.0])),
            "instances row 2: has 17 values, expected 16 (shape [16])",
            id="ragged-rows",
        ),
        pytest.param(instances(ROW_TEXT, "[]"), "instances row 1: must be a flat list of 16 numbers", id="empty-row"),
        pytest.param(
            instances(ROW_TEXT, "5"), "instances row 1: must be a list of numbers, got int", id="row-is-number"
        ),
        pytest.param(
            instances(ROW_TEXT, '{"f0": 1}'),
            "instances row 1: missing feature 'f1' (and 14 more); the model's features are: f0, f1, f2, f3, f4, f5, "
            "f6, f7, ... (16 in all)",
            id="row-is-object-missing-features",
        ),
        pytest.param(
            instances(f"[{ROW_TEXT}]"), "instances row 0: must be a flat list of 16 numbers", id="extra-nesting"
        ),
        pytest.param(
            instances(ROW_TEXT, row_with(3, '"a"')), "instances row 1: element 'a' is not a number", id="string"
        ),
        pytest.param(
            instances(ROW_TEXT, ROW_TEXT, row_with(0, '"1.5"')),
            "instances row 2: element '1.5' is not a number",
            id="numeric-string",
        ),
        pytest.param(
            instances(ROW_TEXT, row_with(15, "null")), "instances row 1: element None is not a number", id="null"
        ),
        pytest.param(
            instances(ROW_TEXT, row_with(7, "true")), "instances row 1: element True is not a number", id="bool-true"
        ),
        pytest.param(
            instances(row_with(7, "false")), "instances row 0: element False is not a number", id="bool-false"
        ),
        pytest.param(
            instances(ROW_TEXT, row_with(2, "[1.0]")),
            "instances row 1: element [1.0] is not a number",
            id="list-inside-row",
        ),
        pytest.param(instances(ROW_TEXT, row_with(4, "NaN")), f"instances row 1: {NOT_FINITE}", id="NaN"),
        pytest.param(
            instances(ROW_TEXT, ROW_TEXT, row_with(4, "Infinity")), f"instances row 2: {NOT_FINITE}", id="Infinity"
        ),
        pytest.param(instances(row_with(0, "-Infinity")), f"instances row 0: {NOT_FINITE}", id="minus-Infinity"),
        pytest.param(instances(ROW_TEXT, row_with(9, "1e39")), f"instances row 1: {NOT_FINITE}", id="beyond-float32"),
        pytest.param(instances(ROW_TEXT, row_with(9, "-1e39")), f"instances row 1: {NOT_FINITE}", id="below-float32"),
        pytest.param(instances(ROW_TEXT, row_with(9, "1e309")), f"instances row 1: {NOT_FINITE}", id="beyond-float64"),
    ],
)
def test_v1_bad_rows_are_400_naming_the_row(probe: Probe, body: bytes, message: str) -> None:
    probe.expect_error(probe.v1(body), 400, message)


def test_v1_values_within_float32_range_serve(probe: Probe) -> None:
    """The limits of the row checks: the largest float32, integers and huge-but-finite values are rows."""
    body = instances(row_with(0, "3.4028234663852886e38"), row_with(1, "18446744073709551616"), row_with(2, "-7"))
    response = probe.v1(body)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3


def test_deeply_nested_json_is_400(probe: Probe) -> None:
    body = b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    probe.expect_error(probe.v1(body), 400, "malformed JSON: nested too deeply")


def test_integer_beyond_float64_is_400_naming_the_row(probe: Probe) -> None:
    probe.expect_error(
        probe.v1(instances(ROW_TEXT, row_with(5, "1" + "0" * 400))), 400, f"instances row 1: {NOT_FINITE}"
    )


# ------------------------------------------------------------------------------------------ size limit


def test_body_over_the_limit_is_413_and_at_the_limit_serves(probe: Probe) -> None:
    good = instances(ROW_TEXT)
    at_limit = good + b" " * (LIMIT - len(good))
    assert len(at_limit) == LIMIT
    response = probe.v1(at_limit)
    assert response.status_code == 200, response.text

    over = at_limit + b" "
    message = f"request body of {LIMIT + 1} bytes exceeds the limit of {LIMIT} bytes"
    probe.expect_error(probe.v1(over), 413, message)
    v2 = probe.http.post("/v2/models/tiny/infer", content=over, headers={BINARY_HEADER: str(len(good))})
    probe.expect_error(v2, 413, message)


def test_chunked_body_over_the_limit_is_413(probe: Probe) -> None:
    def chunks() -> Iterator[bytes]:
        yield instances(ROW_TEXT)
        for _ in range(9):
            yield b" " * (1024 * 1024)

    response = probe.http.post("/v1/models/tiny:predict", content=chunks())
    assert "content-length" not in response.request.headers
    probe.expect_error(response, 413, f"request body exceeds the limit of {LIMIT} bytes")


# ------------------------------------------------------------------------------------------- V2 infer


def test_a_value_beyond_float32_is_refused_without_a_numpy_warning() -> None:
    """1e39 overflows float32 to inf on purpose; the row check names it, and the log gets no RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadRequest, match=r"instances row 1: contains NaN or Infinity"):
            rows_from_nested([[0.0, 1.0], [1e39, 0.0]], (2,))

"""One test per bad-input class, through real HTTP against the shared tiny server: each gets its 4xx status
and `{"error": "..."}` naming the problem, never a 500 or a traceback in the log, and the server answers the
next good request with 200."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import RunningServer

ROW = [0.25 * i - 2.0 for i in range(16)]
ROW_TEXT = json.dumps(ROW)
NOT_FINITE = "contains NaN or Infinity (or a value beyond float32's range)"
LIMIT = 8 * 1024 * 1024  # the default --max-body-bytes
BINARY_HEADER = "Inference-Header-Content-Length"


@dataclass
class Probe:
    """A client of the shared server that checks every bad answer the same way."""

    server: RunningServer
    http: httpx.Client
    log_offset: int

    def expect_error(self, response: httpx.Response, status: int, message: str) -> None:
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"error": message}
        self.expect_serving()

    def expect_serving(self) -> None:
        """The next good request is answered, and nothing so far in this test logged a traceback."""
        good = self.http.post("/v1/models/tiny:predict", json={"instances": [ROW]})
        assert good.status_code == 200, good.text
        assert len(good.json()["predictions"]) == 1
        assert b"Traceback" not in self.server.log_path.read_bytes()[self.log_offset :]

    def v1(self, body: bytes, model: str = "tiny") -> httpx.Response:
        return self.http.post(f"/v1/models/{model}:predict", content=body, headers={"content-type": "application/json"})

    def v2(self, body: dict[str, Any], model: str = "tiny") -> httpx.Response:
        return self.http.post(f"/v2/models/{model}/infer", content=json.dumps(body).encode())

    def v2_binary(self, header: dict[str, Any], binary: bytes, header_length: int | None = None) -> httpx.Response:
        encoded = json.dumps(header).encode()
        length = len(encoded) if header_length is None else header_length
        return self.http.post(
            "/v2/models/tiny/infer",
            content=encoded + binary,
            headers={BINARY_HEADER: str(length), "content-type": "application/octet-stream"},
        )


@pytest.fixture
def probe(server: RunningServer) -> Iterator[Probe]:
    with server.client() as http:
        checked = Probe(server, http, server.log_path.stat().st_size)
        yield checked
        checked.expect_serving()


def instances(*rows: str) -> bytes:
    """A V1 body from row texts, so that literals JSON cannot carry (NaN, Infinity) can be placed."""
    return ('{"instances": [' + ", ".join(rows) + "]}").encode()


def row_with(index: int, literal: str) -> str:
    """ROW as JSON text with the value at `index` replaced by `literal`."""
    values = [json.dumps(v) for v in ROW]
    values[index] = literal
    return "[" + ", ".join(values) + "]"


def tensor(**overrides: Any) -> dict[str, Any]:
    """A valid V2 JSON input tensor of two rows, with fields overridden (None removes one)."""
    fields: dict[str, Any] = {"name": "input", "shape": [2, 16], "datatype": "FP32", "data": ROW + ROW}
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not None}


# ------------------------------------------------------------------------------------------------- routing


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
            instances(ROW_TEXT, '{"f0": 1}'), "instances row 1: must be a list of numbers, got dict", id="row-is-dict"
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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "\"inputs\" must be a list holding one tensor named 'input'", id="no-inputs"),
        pytest.param({"inputs": []}, "\"inputs\" must be a list holding one tensor named 'input'", id="zero-inputs"),
        pytest.param(
            {"inputs": [tensor(), tensor()]},
            "\"inputs\" must be a list holding one tensor named 'input'",
            id="two-inputs",
        ),
        pytest.param({"inputs": ["input"]}, "\"inputs\" must be a list holding one tensor named 'input'", id="str"),
        pytest.param(
            {"inputs": [tensor(name="x")]}, "unknown input 'x'; the model's input is 'input'", id="wrong-input-name"
        ),
        pytest.param(
            {"inputs": [tensor(name=None)]}, "unknown input None; the model's input is 'input'", id="no-input-name"
        ),
        pytest.param(
            {"inputs": [tensor(datatype="BYTES")]},
            "input 'input': datatype 'BYTES' is not supported; use FP32",
            id="wrong-datatype",
        ),
        pytest.param(
            {"inputs": [tensor(datatype=None)]},
            "input 'input': datatype '' is not supported; use FP32",
            id="no-datatype",
        ),
        pytest.param(
            {"inputs": [tensor(shape=None)]}, "input 'input': \"shape\" must be a list of integers", id="no-shape"
        ),
        pytest.param(
            {"inputs": [tensor(shape=[2.0, 16])]},
            "input 'input': \"shape\" must be a list of integers",
            id="float-shape",
        ),
        pytest.param(
            {"inputs": [tensor(shape=[True, 16])]},
            "input 'input': \"shape\" must be a list of integers",
            id="bool-shape",
        ),
        pytest.param(
            {"inputs": [tensor(shape=[3, 16])]}, "input 'input': 32 values do not fill shape [3, 16]", id="shape-3-rows"
        ),
        pytest.param(
            {"inputs": [tensor(shape=[1, 16])]}, "input 'input': 32 values do not fill shape [1, 16]", id="shape-1-row"
        ),
        pytest.param(
            {"inputs": [tensor(shape=[2, 15])]},
            "input 'input': shape [2, 15] does not match the model input [-1, 16]",
            id="shape-not-model",
        ),
        pytest.param(
            {"inputs": [tensor(shape=[32])]},
            "input 'input': shape [32] must be [batch, ...] with batch >= 1",
            id="shape-no-batch",
        ),
        pytest.param(
            {"inputs": [tensor(shape=[0, 16], data=[])]},
            "input 'input': shape [0, 16] must be [batch, ...] with batch >= 1",
            id="shape-zero-rows",
        ),
        pytest.param({"inputs": [tensor(data=None)]}, "input 'input' \"data\" must be a list of numbers", id="no-data"),
        pytest.param(
            {"inputs": [tensor(data=[*ROW, *ROW[:8], "a", *ROW[9:]])]},
            "input 'input' row 1: element 'a' is not a number",
            id="string-in-data",
        ),
        pytest.param(
            {"inputs": [tensor(data=[*ROW[:3], None, *ROW[4:], *ROW])]},
            "input 'input' row 0: element None is not a number",
            id="null-in-data",
        ),
        pytest.param(
            {"inputs": [tensor(data=[ROW, [*ROW[:15], True]])]},
            "input 'input' row 1: element True is not a number",
            id="bool-in-nested-data",
        ),
        pytest.param(
            {"inputs": [tensor(data=[ROW, ROW[:15]])]},
            "input 'input' row 1: has 15 values, expected 16 (shape [16])",
            id="ragged-nested-data",
        ),
        pytest.param(
            {"inputs": [tensor()], "outputs": [{"name": "logits"}, {"name": "scores"}]},
            "unknown output 'scores'; the model's outputs are ['logits', 'probabilities', 'class_index', 'label']",
            id="unknown-output",
        ),
        pytest.param(
            {"inputs": [tensor()], "outputs": ["logits"]},
            '"outputs" must be a list of {"name": ...} objects',
            id="outputs-not-objects",
        ),
    ],
)
def test_v2_bad_json_infer_is_400(probe: Probe, body: dict[str, Any], message: str) -> None:
    probe.expect_error(probe.v2(body), 400, message)


@pytest.mark.parametrize(("literal", "row"), [("NaN", 1), ("Infinity", 0), ("-Infinity", 1), ("1e39", 1), ("1e309", 0)])
def test_v2_non_finite_json_data_is_400_naming_the_row(probe: Probe, literal: str, row: int) -> None:
    values = [json.dumps(v) for v in ROW + ROW]
    values[16 * row + 5] = literal
    body = '{"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32", "data": [' + ", ".join(values) + "]}]}"
    response = probe.http.post("/v2/models/tiny/infer", content=body.encode())
    probe.expect_error(response, 400, f"input 'input' row {row}: {NOT_FINITE}")


def binary_input(rows: np.ndarray[Any, Any], datatype: str = "FP32", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": rows.nbytes},
    }
    fields.update(overrides)
    return fields


def test_v2_binary_good_request_serves(probe: Probe) -> None:
    rows = np.asarray([ROW, ROW], dtype="<f4")
    response = probe.v2_binary({"inputs": [binary_input(rows)]}, rows.tobytes())
    assert response.status_code == 200, response.text
    assert [o["name"] for o in response.json()["outputs"]] == ["logits", "probabilities", "class_index", "label"]


def test_v2_binary_bad_inputs_are_400(probe: Probe) -> None:
    rows = np.asarray([ROW, ROW], dtype="<f4")
    raw = rows.tobytes()  # 128 bytes

    exceeding = binary_input(rows, parameters={"binary_data_size": 256})
    probe.expect_error(
        probe.v2_binary({"inputs": [exceeding]}, raw),
        400,
        "input 'input': binary_data_size 256 exceeds the binary data",
    )
    negative = binary_input(rows, parameters={"binary_data_size": -4})
    probe.expect_error(
        probe.v2_binary({"inputs": [negative]}, raw), 400, "input 'input': binary_data_size -4 exceeds the binary data"
    )
    probe.expect_error(
        probe.v2_binary({"inputs": [binary_input(rows)]}, raw + b"\0\0\0\0"),
        400,
        "4 bytes of binary data are not claimed by any input",
    )
    short = binary_input(rows, parameters={"binary_data_size": 124})
    probe.expect_error(
        probe.v2_binary({"inputs": [short]}, raw[:124]),
        400,
        "input 'input': 124 bytes of binary data, expected 128 for shape [2, 16] of FP32",
    )
    probe.expect_error(
        probe.v2_binary({"inputs": [binary_input(rows, shape=[3, 16])]}, raw),
        400,
        "input 'input': 128 bytes of binary data, expected 192 for shape [3, 16] of FP32",
    )
    probe.expect_error(
        probe.v2_binary({"inputs": [binary_input(rows, datatype="INT32")]}, raw),
        400,
        "input 'input': binary datatype INT32 is not supported; use FP32 (or FP64)",
    )
    body_length = len(json.dumps({"inputs": [binary_input(rows)]}).encode()) + len(raw)
    probe.expect_error(
        probe.v2_binary({"inputs": [binary_input(rows)]}, raw, header_length=body_length + 1),
        400,
        f"invalid {BINARY_HEADER} '{body_length + 1}' for a {body_length}-byte body",
    )
    probe.expect_error(
        probe.http.post("/v2/models/tiny/infer", content=b"{}", headers={BINARY_HEADER: "-1"}),
        400,
        f"invalid {BINARY_HEADER} '-1' for a 2-byte body",
    )
    nan_rows = rows.copy()
    nan_rows[1, 3] = np.nan
    probe.expect_error(
        probe.v2_binary({"inputs": [binary_input(nan_rows)]}, nan_rows.tobytes()),
        400,
        f"input 'input' row 1: {NOT_FINITE}",
    )
    wide = np.asarray([ROW, [*ROW[:15], 1e39]], dtype="<f8")  # FP64 input beyond float32's range
    probe.expect_error(
        probe.v2_binary({"inputs": [binary_input(wide, "FP64")]}, wide.tobytes()),
        400,
        f"input 'input' row 1: {NOT_FINITE}",
    )


def test_v2_unicode_digit_header_length_is_400(probe: Probe) -> None:
    response = probe.http.post("/v2/models/tiny/infer", content=b"{}", headers={BINARY_HEADER.encode(): b"\xb2"})
    probe.expect_error(response, 400, f"invalid {BINARY_HEADER} '²' for a 2-byte body")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            {"inputs": [tensor(parameters="binary")]},
            "input 'input': \"parameters\" must be a JSON object, got str",
            id="input-parameters",
        ),
        pytest.param(
            {"inputs": [tensor()], "parameters": [1]},
            'request: "parameters" must be a JSON object, got list',
            id="request-parameters",
        ),
        pytest.param(
            {"inputs": [tensor()], "outputs": [{"name": "logits", "parameters": 1}]},
            "output 'logits': \"parameters\" must be a JSON object, got int",
            id="output-parameters",
        ),
    ],
)
def test_v2_parameters_not_an_object_is_400(probe: Probe, body: dict[str, Any], message: str) -> None:
    probe.expect_error(probe.v2(body), 400, message)


# ------------------------------------------------------------------------------------------- CNN rows


def cnn_image(seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((1, 8, 8)).astype(np.float32)


def test_cnn_nested_and_flat_rows_give_identical_bits(probe: Probe) -> None:
    images = [cnn_image(seed) for seed in range(3)]
    nested = probe.http.post("/v1/models/tinycnn:predict", json={"instances": [image.tolist() for image in images]})
    flat = probe.http.post(
        "/v1/models/tinycnn:predict", json={"instances": [image.reshape(-1).tolist() for image in images]}
    )
    assert [nested.status_code, flat.status_code] == [200, 200], nested.text + flat.text
    predictions = [nested.json()["predictions"], flat.json()["predictions"]]
    assert predictions[0] == predictions[1]
    for row in range(3):
        bits = [np.asarray(p[row]["logits"], dtype=np.float32).tobytes() for p in predictions]
        assert bits[0] == bits[1]
        assert len(bits[0]) == 3 * 4


def test_cnn_nested_and_flat_rows_mixed_in_one_request(probe: Probe) -> None:
    images = [cnn_image(seed) for seed in range(3)]
    nested = probe.http.post("/v1/models/tinycnn:predict", json={"instances": [image.tolist() for image in images]})
    assert nested.status_code == 200, nested.text
    mixed = probe.http.post(
        "/v1/models/tinycnn:predict",
        json={"instances": [images[0].tolist(), images[1].reshape(-1).tolist(), images[2].tolist()]},
    )
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["predictions"] == nested.json()["predictions"]
    probe.expect_serving()


def test_cnn_v2_shapes_nested_and_flat_give_identical_bits(probe: Probe) -> None:
    image = cnn_image(5)
    answers = []
    for shape in ([1, 1, 8, 8], [1, 64]):
        body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": image.reshape(-1).tolist()}]}
        response = probe.v2(body, model="tinycnn")
        assert response.status_code == 200, response.text
        answers.append(response.json()["outputs"])
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        pytest.param(
            cnn_image(0)[0].tolist(),
            "instances row 1: has 8 entries on its first axis, expected shape [1, 8, 8]",
            id="8x8-no-channel",
        ),
        pytest.param(
            cnn_image(0).reshape(-1).tolist()[:63],
            "instances row 1: has 63 values, expected 64 (shape [1, 8, 8])",
            id="flat-63",
        ),
        pytest.param(
            [[*cnn_image(0)[0].tolist()[:7], [0.0] * 7]],
            "instances row 1: has 7 values, expected 8 (shape [8])",
            id="short-inner-row",
        ),
        pytest.param(
            [[*cnn_image(0)[0].tolist()[:7], 0.0]],
            "instances row 1: must be a list of numbers, got float",
            id="number-for-inner-row",
        ),
        pytest.param(
            cnn_image(0).tolist() * 2,
            "instances row 1: has 2 entries on its first axis, expected shape [1, 8, 8]",
            id="2x8x8",
        ),
    ],
)
def test_cnn_wrong_row_shapes_are_400(probe: Probe, row: list[Any], message: str) -> None:
    body = {"instances": [cnn_image(1).tolist(), row]}
    probe.expect_error(probe.http.post("/v1/models/tinycnn:predict", json=body), 400, message)


def test_cnn_non_finite_pixel_is_400_naming_the_row(probe: Probe) -> None:
    image = cnn_image(2)
    text = json.dumps(image.tolist()).replace(json.dumps(float(image[0, 4, 4])), "NaN", 1)
    body = f'{{"instances": [{json.dumps(image.tolist())}, {json.dumps(image.tolist())}, {text}]}}'.encode()
    response = probe.http.post("/v1/models/tinycnn:predict", content=body)
    probe.expect_error(response, 400, f"instances row 2: {NOT_FINITE}")

"""Bad V2 (Open Inference Protocol) requests, JSON and binary: each a 400 naming the problem; the server
serves on."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from bad_input_helpers import (
    BINARY_HEADER,
    NOT_FINITE,
    ROW,
    Probe,
    binary_input,
    tensor,
)


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
            "unknown output 'scores'; a classifier's outputs are ['logits', 'probabilities', 'class_index', 'label'], "
            "a regression model's ['value', 'logits']",
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

"""Shared pieces of the bad-input tests: the Probe client and request builders."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

if TYPE_CHECKING:  # conftest imports this module for its `probe` fixture
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


def binary_input(rows: np.ndarray[Any, Any], datatype: str = "FP32", **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": rows.nbytes},
    }
    fields.update(overrides)
    return fields


def cnn_image(seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((1, 8, 8)).astype(np.float32)

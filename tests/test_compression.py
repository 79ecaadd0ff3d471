"""Compressed request and response bodies (issue 11, defect 10), against the shared tiny server: gzip/deflate
requests answer the same bits as plain ones, a bomb is refused cheaply, and answers are compressed when asked,
also for tritonclient's request_compression_algorithm / response_compression_algorithm."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from bad_input_helpers import LIMIT, Probe
from conftest import RunningServer

ROWS = np.random.default_rng(5).standard_normal((40, 16)).astype(np.float32)
BODY = json.dumps({"instances": ROWS.tolist()}).encode()


def plain_answer(probe: Probe) -> dict[str, Any]:
    response = probe.http.post("/v1/models/tiny:predict", content=BODY, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [("gzip", gzip.compress(BODY)), ("deflate", zlib.compress(BODY)), ("GZip", gzip.compress(BODY))],
)
def test_compressed_request_answers_the_same_as_plain(probe: Probe, encoding: str, packed: bytes) -> None:
    response = probe.http.post(
        "/v1/models/tiny:predict", content=packed, headers={"Content-Encoding": encoding, "Accept-Encoding": "identity"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == plain_answer(probe)


def test_gzip_bomb_is_413_without_inflating_it(probe: Probe) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()  # 64 MiB inflated
    assert len(bomb) < 100_000
    response = probe.http.post("/v1/models/tiny:predict", content=bomb, headers={"Content-Encoding": "gzip"})
    probe.expect_error(response, 413, f"decompressed request body exceeds the limit of {LIMIT} bytes")


@pytest.mark.parametrize(
    ("encoding", "body", "status", "message"),
    [
        ("gzip", b"not gzip at all", 400, "request body is not valid gzip data: Error -3 while decompressing data: "
         "incorrect header check"),
        ("gzip", gzip.compress(BODY)[:-20], 400, "request body is truncated gzip data"),
        ("br", b"\x00", 415, "Content-Encoding 'br' is not supported; use gzip or deflate"),
    ],
)  # fmt: skip
def test_bad_compressed_body_is_refused(probe: Probe, encoding: str, body: bytes, status: int, message: str) -> None:
    response = probe.http.post("/v1/models/tiny:predict", content=body, headers={"Content-Encoding": encoding})
    probe.expect_error(response, status, message)


@pytest.mark.parametrize(("accept", "encoding"), [("gzip", "gzip"), ("deflate", "deflate"), ("br, deflate", "deflate")])
def test_answer_is_compressed_when_the_client_asks(probe: Probe, accept: str, encoding: str) -> None:
    request = probe.http.build_request("POST", "/v1/models/tiny:predict", content=BODY)
    request.headers["Accept-Encoding"] = accept
    response = probe.http.send(request, stream=True)
    raw = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert response.headers["content-encoding"] == encoding
    assert int(response.headers["content-length"]) == len(raw)
    unpacked = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw)
    assert json.loads(unpacked) == plain_answer(probe)
    assert len(raw) < len(unpacked)


def test_small_answers_and_refused_codings_stay_plain(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        live = http.get("/v2/health/live", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in live.headers  # under 1 KiB
        refused = http.post("/v1/models/tiny:predict", content=BODY, headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in refused.headers
        assert len(refused.json()["predictions"]) == len(ROWS)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_both_ways_gets_the_plain_bits(server: RunningServer, algorithm: str) -> None:
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
        tensor.set_data_from_numpy(ROWS, binary_data=True)
        outputs = [triton.InferRequestedOutput("logits", binary_data=True)]
        plain = client.infer("tiny", [tensor], outputs=outputs)
        packed = client.infer(
            "tiny",
            [tensor],
            outputs=outputs,
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
    finally:
        client.close()
    assert packed.as_numpy("logits").tobytes() == plain.as_numpy("logits").tobytes()
    assert packed.get_response()["model_name"] == "tiny"

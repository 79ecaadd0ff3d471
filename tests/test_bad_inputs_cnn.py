"""CNN rows: nested 1x8x8 and flat 64 give identical bits; wrong shapes and non-finite pixels are 400."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from bad_input_helpers import (
    NOT_FINITE,
    Probe,
    cnn_image,
)


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

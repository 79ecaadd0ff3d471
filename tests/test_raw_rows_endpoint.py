"""Models trained on CSVs, served through real HTTP (uvicorn): a raw row (text, a null, numbers as in the
CSV) sent as a V1 object gives the bits of its encoded vector sent positionally, over V2 and inside a batch
of 64; a regression model answers `value` over V1, V2 and tritonclient, and passes the invariance probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from conftest import RunningServer, start_server, stop_server
from training_helpers import write_csv

from models.checkpoint import read_manifest
from service.guarantee.probe_http import ProbeClient, check_invariance, prediction_bits
from training.cli import main

COLORS = ("red", "green", "blue")
RAW = {"size": 2.5, "weight": None, "color": "green", "code": "007"}  # weight: blank, filled with the mean


def _mixed_csv(path: Path) -> Path:
    lines = ["size,weight,color,code,kind"]
    for i in range(120):
        weight = "" if i % 9 == 0 else f"{(i % 13) * 0.7:.1f}"
        lines.append(f"{(i % 11) * 0.5},{weight},{COLORS[i % 3]},{('007', '042')[i % 2]},{'ab'[(i // 3) % 2]}")
    return write_csv(path, "\n".join(lines) + "\n")


def _regression_csv(path: Path) -> Path:
    lines = ["x1,x2,price"] + [f"{i * 0.1:.1f},{(i % 7) * 1.5},{3.0 * i + (i % 5) * 0.25}" for i in range(100)]
    return write_csv(path, "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    data = tmp_path_factory.mktemp("csv")
    repository = tmp_path_factory.mktemp("repository")
    common = ["--hidden", "16", "--epochs", "2", "--repository", str(repository)]
    mixed = ["--data", str(_mixed_csv(data / "mixed.csv")), "--missing", "mean", "--categorical", "code"]
    assert main([*mixed, *common]) == 0
    assert main(["--data", str(_regression_csv(data / "house.csv")), *common]) == 0
    running = start_server(repository, tmp_path_factory.mktemp("logs"))
    yield running, repository
    stop_server(running)


def predict(client: httpx.Client, model: str, instances: list[Any]) -> list[dict[str, Any]]:
    response = client.post(f"/v1/models/{model}:predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def test_raw_row_equals_its_encoded_vector_alone_positionally_over_v2_and_in_a_batch_of_64(
    served: tuple[RunningServer, Path],
) -> None:
    server, repository = served
    preprocessing = read_manifest(repository / "mixed" / "1").input.preprocessing
    assert preprocessing is not None
    encoded = preprocessing.encode_row(RAW)
    fill = preprocessing.columns[1].fill
    # size, weight (the training split's mean), weight:missing, color one-hot (blue, green, red), code one-hot
    assert encoded == [2.5, fill, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    rng = np.random.default_rng(0)
    others = [
        {"size": float(rng.integers(0, 11)) / 2, "weight": "1.4", "color": COLORS[k % 3], "code": "042"}
        for k in range(63)
    ]
    with server.client() as client:
        alone = predict(client, "mixed", [RAW])[0]
        positional = predict(client, "mixed", [encoded])[0]
        batch = predict(client, "mixed", [*others[:37], RAW, *others[37:]])
        v2 = client.post(
            "/v2/models/mixed/infer",
            json={"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": encoded}]},
        )
    assert len(batch) == 64
    assert prediction_bits(alone) == prediction_bits(positional) == prediction_bits(batch[37])
    outputs = {output["name"]: output["data"] for output in v2.json()["outputs"]}
    assert np.asarray(outputs["logits"], np.float32).tobytes() == np.asarray(alone["logits"], np.float32).tobytes()
    assert outputs["label"] == [alone["label"]]


def test_raw_row_refusals_are_400_naming_the_feature(served: tuple[RunningServer, Path]) -> None:
    server, _ = served
    cases = [
        (
            {**RAW, "color": "purple"},
            "feature 'color': unknown category 'purple' (the model knows 'blue', 'green', 'red')",
        ),
        ({**RAW, "code": 7}, "feature 'code': unknown category '7' (the model knows '007', '042')"),
        ({**RAW, "size": "big"}, "feature 'size': 'big' is not a number"),
        ({"size": 1.0}, "missing feature 'weight' (and 2 more); the model's features are: size, weight, color, code"),
    ]
    with server.client() as client:
        for row, message in cases:
            response = client.post("/v1/models/mixed:predict", json={"instances": [RAW, row]})
            assert (response.status_code, response.json()) == (400, {"error": f"instances row 1: {message}"})


def test_metadata_says_which_inputs_take_raw_rows(served: tuple[RunningServer, Path]) -> None:
    server, _ = served
    with server.client() as client:
        parameters = client.get("/v2/models/mixed").json()["parameters"]
    raw = parameters["raw_input"]
    assert [column["name"] for column in raw["columns"]] == ["size", "weight", "color", "code"]
    assert raw["columns"][2] == {
        "name": "color",
        "kind": "categorical",
        "indicator": False,
        "categories": list(sorted(COLORS)),
    }
    assert parameters["feature_names"] == [
        "size", "weight", "weight:missing", "color=blue", "color=green", "color=red", "code=007", "code=042"
    ]  # fmt: skip
    assert parameters["input_shape"] == [8]


def test_preprocessed_and_regression_models_pass_the_invariance_probe(served: tuple[RunningServer, Path]) -> None:
    server, _ = served
    client = ProbeClient(server.url)
    for name in ("mixed", "house"):
        report = check_invariance(client, client.model(name), None, seed=5)
        assert report.summary() == f"passed: {report.cases} cases bitwise identical", name


def test_regression_answers_value_over_v1_v2_and_tritonclient(served: tuple[RunningServer, Path]) -> None:
    server, repository = served
    manifest = read_manifest(repository / "house" / "1")
    assert manifest.task == "regression"
    assert manifest.target is not None
    rows = np.array([[0.5, 3.0], [9.9, 0.0], [4.2, 7.5]], dtype=np.float32)
    with server.client() as client:
        v1 = predict(client, "house", rows.tolist())
        metadata = client.get("/v2/models/house").json()
    expected = np.asarray([p["logits"][0] for p in v1], np.float32).astype(np.float64)
    expected = expected * manifest.target.std + manifest.target.mean
    assert [p["value"] for p in v1] == expected.tolist()
    assert metadata["outputs"] == [
        {"name": "value", "datatype": "FP64", "shape": [-1]},
        {"name": "logits", "datatype": "FP32", "shape": [-1, 1]},
    ]
    http = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        answer = http.infer("house", [tensor], outputs=[triton.InferRequestedOutput("value", binary_data=True)])
    finally:
        http.close()
    assert answer.as_numpy("value").tobytes() == expected.tobytes()


def test_regression_model_refuses_a_classifier_output_by_name(served: tuple[RunningServer, Path]) -> None:
    server, _ = served
    tensor = {"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 3.0]}
    with server.client() as client:
        response = client.post("/v2/models/house/infer", json={"inputs": [tensor], "outputs": [{"name": "label"}]})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "unknown output 'label'; the model's outputs are ['value', 'logits']"},
    )

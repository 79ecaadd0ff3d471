"""The standard `tritonclient[http]` client against the shared tiny server: health, metadata, and inference with
binary (its default) and JSON tensors, each answer bitwise equal to the V1 answer for the same rows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from conftest import RunningServer
from tritonclient.utils import InferenceServerException

ROWS = 37  # more than one execution chunk (C = 32 by default)
CLASSES = ["class-0", "class-1", "class-2", "class-3"]


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[Any]:
    http = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield http
    http.close()


@pytest.fixture(scope="module")
def rows() -> np.ndarray[Any, Any]:
    return np.random.default_rng(3).standard_normal((ROWS, 16)).astype(np.float32) * 2


@pytest.fixture(scope="module")
def v1_answer(server: RunningServer, rows: np.ndarray[Any, Any]) -> dict[str, Any]:
    with server.client() as http:
        response = http.post("/v1/models/tiny:predict", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    answer["sha256"] = response.headers["X-Model-Sha256"]
    return answer


def float32_outputs(v1_answer: dict[str, Any], key: str) -> np.ndarray[Any, Any]:
    return np.asarray([p[key] for p in v1_answer["predictions"]], dtype=np.float32)


def assert_same_as_v1(result: Any, v1_answer: dict[str, Any], names: list[str]) -> None:
    """Every returned output equals the V1 answer for the same rows, bitwise."""
    for name in ("logits", "probabilities"):
        if name in names:
            got, want = result.as_numpy(name), float32_outputs(v1_answer, name)
            assert got.dtype == np.float32
            assert got.shape == (ROWS, len(CLASSES))
            assert np.array_equal(got, want)
            assert got.tobytes() == want.tobytes()
    labels = [p["label"] for p in v1_answer["predictions"]]
    if "class_index" in names:
        class_index = result.as_numpy("class_index")
        assert class_index.dtype == np.int64
        assert [CLASSES[i] for i in class_index.tolist()] == labels
    if "label" in names:
        decoded = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
        assert decoded == labels
    assert [output["name"] for output in result.get_response()["outputs"]] == names


def input_tensor(rows: np.ndarray[Any, Any], binary_data: bool = True) -> Any:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary_data)
    return tensor


def test_health(client: Any) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True
    assert client.is_model_ready("tiny") is True
    assert client.is_model_ready("tiny", "1") is True
    assert client.is_model_ready("tinycnn") is True
    assert client.is_model_ready("nope") is False
    assert client.is_model_ready("tiny", "9") is False


def test_server_metadata(client: Any) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "invariant-serve"
    assert isinstance(metadata["version"], str)
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(client: Any, v1_answer: dict[str, Any]) -> None:
    metadata = client.get_model_metadata("tiny")
    assert metadata["name"] == "tiny"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert metadata["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "class_index", "datatype": "INT64", "shape": [-1]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    parameters = metadata["parameters"]
    assert parameters["checkpoint_sha256"] == v1_answer["sha256"]
    assert len(parameters["checkpoint_sha256"]) == 64
    assert parameters["chunk_rows"] == 32
    assert parameters["state"] == "READY"
    assert parameters["class_labels"] == CLASSES
    assert parameters["self_test"]["passed"] is True
    assert client.get_model_metadata("tiny", "1") == metadata
    cnn = client.get_model_metadata("tinycnn")
    assert cnn["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]


def test_infer_with_default_binary_arguments(
    client: Any, rows: np.ndarray[Any, Any], v1_answer: dict[str, Any]
) -> None:
    result = client.infer("tiny", [input_tensor(rows)], request_id="binary-1")
    response = result.get_response()
    assert response["id"] == "binary-1"
    assert response["model_name"] == "tiny"
    assert response["model_version"] == "1"
    assert response["parameters"] == {"checkpoint_sha256": v1_answer["sha256"]}
    assert all("binary_data_size" in output["parameters"] for output in response["outputs"])
    assert_same_as_v1(result, v1_answer, ["logits", "probabilities", "class_index", "label"])


def test_infer_with_json_tensors(client: Any, rows: np.ndarray[Any, Any], v1_answer: dict[str, Any]) -> None:
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("logits", "label")]
    result = client.infer("tiny", [input_tensor(rows, binary_data=False)], outputs=outputs, request_id="json-2")
    response = result.get_response()
    assert response["id"] == "json-2"
    assert all("data" in output and "parameters" not in output for output in response["outputs"])
    assert_same_as_v1(result, v1_answer, ["logits", "label"])


def test_infer_json_input_with_binary_outputs_requested(
    client: Any, rows: np.ndarray[Any, Any], v1_answer: dict[str, Any]
) -> None:
    names = ["probabilities", "class_index", "logits", "label"]
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in names]
    result = client.infer("tiny", [input_tensor(rows, binary_data=False)], model_version="1", outputs=outputs)
    response = result.get_response()
    assert re.fullmatch(r"[0-9a-f]{16}", response["id"])  # none sent: the request id the server made (X-Request-Id)
    assert [output["parameters"]["binary_data_size"] for output in response["outputs"][:3]] == [
        ROWS * 4 * 4,
        ROWS * 8,
        ROWS * 4 * 4,
    ]
    assert_same_as_v1(result, v1_answer, names)


def test_infer_binary_input_with_json_and_binary_outputs_mixed(
    client: Any, rows: np.ndarray[Any, Any], v1_answer: dict[str, Any]
) -> None:
    outputs = [
        triton.InferRequestedOutput("logits", binary_data=False),
        triton.InferRequestedOutput("label", binary_data=True),
    ]
    result = client.infer("tiny", [input_tensor(rows)], outputs=outputs)
    assert_same_as_v1(result, v1_answer, ["logits", "label"])


def test_single_rows_through_tritonclient_equal_the_batch(
    client: Any, rows: np.ndarray[Any, Any], v1_answer: dict[str, Any]
) -> None:
    want = float32_outputs(v1_answer, "logits")
    for index in (0, 31, 32, ROWS - 1):
        result = client.infer("tiny", [input_tensor(rows[index : index + 1])])
        assert result.as_numpy("logits").tobytes() == want[index : index + 1].tobytes()


def test_cnn_infer(client: Any, server: RunningServer) -> None:
    images = np.random.default_rng(4).standard_normal((3, 1, 8, 8)).astype(np.float32)
    result = client.infer("tinycnn", [input_tensor(images)])
    with server.client() as http:
        v1 = http.post("/v1/models/tinycnn:predict", json={"instances": images.tolist()})
    assert v1.status_code == 200, v1.text
    want = np.asarray([p["logits"] for p in v1.json()["predictions"]], dtype=np.float32)
    assert result.as_numpy("logits").tobytes() == want.tobytes()


def test_errors_raise_with_the_server_message(client: Any, rows: np.ndarray[Any, Any]) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [input_tensor(rows)])
    assert unknown.value.status() == "404"
    assert unknown.value.message() == "unknown model 'nope'; available: ['tiny', 'tinycnn']"

    with pytest.raises(InferenceServerException) as version:
        client.infer("tiny", [input_tensor(rows)], model_version="9")
    assert version.value.status() == "404"
    assert version.value.message() == "model 'tiny' has no version '9'; available: [1]"

    with pytest.raises(InferenceServerException) as shape:
        client.infer("tiny", [input_tensor(rows[:, :15].copy())])
    assert shape.value.status() == "400"
    assert shape.value.message() == "input 'input': shape [37, 15] does not match the model input [-1, 16]"

    with pytest.raises(InferenceServerException) as metadata:
        client.get_model_metadata("nope")
    assert metadata.value.status() == "404"
    assert metadata.value.message() == "unknown model 'nope'; available: ['tiny', 'tinycnn']"

    assert client.is_server_ready() is True  # and the server keeps serving

"""Imported ONNX models through the loader: the three examples (tiny) pass the pre-check and the self-test and
serve the bits of the artifact run alone at C; a row-mixing model passes the graph check and is refused by
the self-test; a hand-edited version directory gets the same checks at load; and the real server answers an
imported model bitwise like onnxruntime alone, over V1 JSON and tritonclient's binary tensors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import resnet_cnn
import tabular_mlp
import torch
import transformer_encoder
import tritonclient.http as triton
from conftest import RunningServer, start_server, stop_server
from import_helpers import RowMixing, dropout_graph, export_torch, write_model
from torch import nn

from models.checkpoint import sha256_of
from models.package import main as package
from service.engine.executor_onnx import OPTIMIZATION_LEVEL, OPTIMIZATION_NAME, OnnxExecutor
from service.lifecycle.loader import Refusal, Verified, verify_version
from service.observability.metrics import Metrics
from service.settings import Settings

C = 32
EXAMPLES: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "tabular": lambda: tabular_mlp.build(hidden=16, steps=20),
    "resnet": lambda: resnet_cnn.build(width=4, steps=3),
    "encoder": lambda: transformer_encoder.build(dim=8, layers=1, steps=5),
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each example exported (tiny) and packaged; plus the row-mixing model, which the pre-check accepts."""
    exports, repo = tmp_path_factory.mktemp("exports"), tmp_path_factory.mktemp("repository")
    models = {name: build() for name, build in EXAMPLES.items()}
    models["rowmix"] = (RowMixing().eval(), torch.randn(4, 4))
    for name, (model, example) in models.items():
        path = export_torch(model, example, exports / f"{name}.onnx", external_data=name == "resnet")
        assert package(["--model", str(path), "--name", name, "--repository", str(repo)]) == 0
    return repo


def load(repository: Path, name: str, version: int = 1) -> Verified | Refusal:
    settings = Settings(repository=repository, chunk_rows=C)
    return verify_version(name, version, repository / name / str(version), settings, Metrics())


def alone_at_c(version_dir: Path, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The artifact run by onnxruntime alone, one C-row zero-padded forward per row (the same pinned options,
    from the published files: onnxruntime resolves the sibling data file itself here)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = OPTIMIZATION_LEVEL
    session = ort.InferenceSession(str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    answers = []
    for row in rows:
        pad = np.zeros((C, *rows.shape[1:]), dtype=np.float32)
        pad[0] = row
        answers.append(session.run(None, {session.get_inputs()[0].name: pad})[0][0])
    return np.stack(answers)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_passes_the_self_test_and_serves_the_artifacts_bits(repository: Path, name: str) -> None:
    verified = load(repository, name)
    assert isinstance(verified, Verified), verified
    report = verified.self_test
    assert report.passed
    assert report.failures == 0
    assert report.cases > 4 * C
    print(f"{name}: self-test {report.summary()}")
    described = verified.executor.describe()
    assert described["executor"] == OnnxExecutor.kind
    assert described["onnxruntime"] == ort.__version__
    assert verified.numerics.parts["graph_optimization"] == OPTIMIZATION_NAME
    assert "cpu_model" in verified.numerics.parts
    rows = np.random.default_rng(5).standard_normal((7, *verified.manifest.input.shape)).astype(np.float32)
    outputs = verified.executor.run(rows)
    assert outputs.logits.tobytes() == alone_at_c(verified.path, rows).astype(np.float32).tobytes()


@pytest.mark.slow
def test_a_row_mixing_model_passes_the_graph_check_and_is_refused_by_the_self_test(repository: Path) -> None:
    refused = load(repository, "rowmix")
    assert isinstance(refused, Refusal)
    assert refused.reason.startswith("self-test"), refused.reason
    assert "failed" in refused.reason, refused.reason


@pytest.mark.slow
def test_a_hand_edited_version_gets_the_same_checks_at_load(repository: Path, tmp_path: Path) -> None:
    source = repository / "tabular" / "1"
    for version, graph in ((2, dropout_graph(True)), (3, None)):
        target = repository / "tabular" / str(version)
        target.mkdir()
        manifest = json.loads((source / "manifest.json").read_text())
        if graph is None:  # the graph changed after packaging: the checksum refuses it
            (target / "model.onnx").write_bytes((source / "model.onnx").read_bytes() + b"\0")
        else:  # a hand-written manifest over a training-mode graph: the pre-check refuses it
            write_model(graph, target / "model.onnx")
            manifest["weights_sha256"] = sha256_of(target / "model.onnx")
        (target / "manifest.json").write_text(json.dumps(manifest))
    refused = load(repository, "tabular", 2)
    assert isinstance(refused, Refusal)
    assert "Dropout in training mode" in refused.reason, refused
    refused = load(repository, "tabular", 3)
    assert isinstance(refused, Refusal)
    assert "checksum mismatch: model.onnx" in refused.reason, refused


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    served_repo = tmp_path_factory.mktemp("served")
    (served_repo / "tabular").symlink_to(repository / "tabular", target_is_directory=True)
    running = start_server(served_repo, tmp_path_factory.mktemp("logs"), "--chunk-rows", str(C))
    yield running
    stop_server(running)


@pytest.mark.slow
def test_the_server_answers_an_imported_model_with_the_artifacts_bits(server: RunningServer, repository: Path) -> None:
    rows = np.random.default_rng(9).standard_normal((37, 12)).astype(np.float32)
    with server.client() as http:
        v1 = http.post("/v1/models/tabular:predict", json={"instances": rows.tolist()})
        metadata = http.get("/v2/models/tabular").json()
    assert v1.status_code == 200, v1.text
    logits = np.asarray([p["logits"] for p in v1.json()["predictions"]], dtype=np.float32)
    assert logits.tobytes() == alone_at_c(repository / "tabular" / "1", rows).astype(np.float32).tobytes()
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        tensor = triton.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        result = client.infer("tabular", [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=True)])
    finally:
        client.close()
    assert result.as_numpy("logits").tobytes() == logits.tobytes()
    assert metadata["inputs"][0]["shape"] == [-1, 12]
    assert metadata["platform"] == "onnxruntime_onnx"  # Triton's name for what runs it (ours: pytorch_invariant)

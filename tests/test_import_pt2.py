"""torch.export programs (.pt2): crafted archives refused by the pre-check with their reason and their payload
never run; the sample-input payload never read; the examples served with the bits of the program run alone
at C; a row-mixing program refused by the self-test; a hand-dropped file checked the same way at load."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import resnet_cnn
import tabular_mlp
import torch
import transformer_encoder
from conftest import start_server, stop_server
from export_common import export_pt2
from import_helpers import MarkerPayload, RowMixing
from pt2_helpers import LinearBatchNorm, crafted, exported, write_archive
from torch import nn

from models.checkpoint import sha256_of
from models.onnx_check import ImportRefused
from models.package import main as package
from models.pt2_check import check_pt2
from models.pt2_graph import check_node
from service.engine.executor_pt2 import FORMAT, load_program
from service.lifecycle.loader import Refusal, Verified, verify_version
from service.observability.metrics import Metrics
from service.settings import Settings

C = 32
REASONS = {
    "pickled weight (use_pickle)": "linear.weight is pickled (use_pickle)",
    "pickle member (.pkl)": "data/weights/weights.pkl is a pickle",
    "opaque-object constant": "constants evil is pickled (use_pickle)",
    "shape expression": "is not a plain integer or size symbol",
    "guards code": "carries guards code",
    "non-ATen target (builtins.exec)": "node target 'builtins.exec' is not an allowed ATen op",
    "non-ATen target (custom op)": "node target 'torch.ops.evil.run.default' is not an allowed ATen op",
    "AOTInductor package": "an AOTInductor package",
    "legacy pickled member": "legacy member version",
    "second model": "more than one model",
    "extra file": "'extra/module_info.json' is not part of a checked torch.export program",
    "train-mode dropout": "train-mode graph: random op native_dropout.default",
    "train-mode BatchNorm": "train-mode graph: BatchNorm with batch statistics (_native_batch_norm_legit_functional",
    "mutated buffer": "mutated buffers",
}

# The crafted archives whose payload plain torch.export.load (or .module()) runs (measured, torch 2.13).
LIVE = ["pickled weight (use_pickle)", "opaque-object constant", "shape expression", "guards code"]


@pytest.fixture(scope="module")
def crafted_archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    directory = tmp_path_factory.mktemp("crafted")
    marker = directory / "marker"
    archives = {
        name: write_archive(directory / f"{index}.pt2", members)
        for index, (name, members) in enumerate(crafted(marker, directory).items())
    }
    return marker, archives


def test_every_closed_path_has_a_crafted_archive(crafted_archives: tuple[Path, dict[str, Path]]) -> None:
    assert sorted(crafted_archives[1]) == sorted(REASONS)


@pytest.mark.parametrize("case", list(REASONS))
def test_crafted_archive_is_refused_with_its_reason_and_nothing_runs(
    case: str, crafted_archives: tuple[Path, dict[str, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker, archives = crafted_archives
    repository = tmp_path / "repository"
    capsys.readouterr()
    assert package(["--model", str(archives[case]), "--name", "crafted", "--repository", str(repository)]) == 2
    err = capsys.readouterr().err
    print(f"{case}: {err.strip()}")
    assert err.count("\n") == 1, err
    assert REASONS[case] in err, err
    assert not (repository / "crafted").exists()
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", LIVE)
def test_torch_export_load_runs_the_payload(case: str, crafted_archives: tuple[Path, dict[str, Path]]) -> None:
    """The control: plain torch.export.load(...).module()(rows), in a child process, does run these payloads,
    so the refusals above are what keeps the marker absent."""
    marker, archives = crafted_archives
    run = f"torch.export.load({str(archives[case])!r}).module()(torch.ones(2, 4))"
    code = f"import torch\ntry:\n    {run}\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=600)
    try:
        assert marker.read_text() == "pwned"
    finally:
        marker.unlink(missing_ok=True)


def test_sample_inputs_are_never_read(tmp_path: Path) -> None:
    """A sample-inputs member that fails weights_only loading (torch would fall back to weights_only=False and
    run it) is dropped from what torch gets: the program loads, runs, and the marker never appears."""
    marker = tmp_path / "marker"
    members = exported(LinearBatchNorm(), tmp_path)
    payload = io.BytesIO()
    torch.save(MarkerPayload(marker), payload)
    path = write_archive(tmp_path / "model.pt2", {**members, "m/data/sample_inputs/model.pt": payload.getvalue()})
    checked = check_pt2(path)
    module = load_program(checked.archive_bytes)
    assert module(torch.ones(2, 4)).shape == (2, 3)
    assert not marker.exists()
    with io.BytesIO(checked.archive_bytes) as rebuilt:
        import zipfile

        sample = zipfile.ZipFile(rebuilt).read("archive/data/sample_inputs/model.pt")
    assert sample == b""


def alone_at_c(path: Path, rows: np.ndarray) -> np.ndarray:
    """The user's own program (trusted here: we exported it) run alone, one C-row zero-padded forward per row."""
    module = torch.export.load(str(path)).module()
    answers = []
    with torch.inference_mode():
        for row in rows:
            pad = torch.zeros((C, *rows.shape[1:]))
            pad[0] = torch.from_numpy(row)
            answers.append(module(pad)[0].numpy())
    return np.stack(answers)


EXAMPLES: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "tabular": lambda: tabular_mlp.build(hidden=16, steps=20),
    "resnet": lambda: resnet_cnn.build(width=4, steps=3),
    "encoder": lambda: transformer_encoder.build(dim=8, layers=1, steps=5),
    "rowmix": lambda: (RowMixing().eval(), torch.randn(4, 4)),
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    exports, repo = tmp_path_factory.mktemp("pt2"), tmp_path_factory.mktemp("repository")
    for name, build in EXAMPLES.items():
        model, example = build()
        path = export_pt2(model, example, exports / f"{name}.pt2")
        assert package(["--model", str(path), "--name", name, "--repository", str(repo)]) == 0
    return exports, repo


def load(repo: Path, name: str, version: int = 1) -> Verified | Refusal:
    settings = Settings(repository=repo, chunk_rows=C)
    return verify_version(name, version, repo / name / str(version), settings, Metrics())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tabular", "resnet", "encoder"])
def test_example_program_serves_the_bits_of_the_program_alone_at_c(repository: tuple[Path, Path], name: str) -> None:
    exports, repo = repository
    verified = load(repo, name)
    assert isinstance(verified, Verified), verified
    assert verified.self_test.passed
    assert verified.self_test.failures == 0
    print(f"{name}: self-test {verified.self_test.summary()}, executor {verified.executor.describe()['executor']}")
    assert verified.executor.describe()["format"] == FORMAT
    manifest = json.loads((repo / name / "1" / "manifest.json").read_text())
    assert manifest["architecture"]["arch"] == "pt2"
    assert manifest["training"]["format"] == FORMAT
    rows = np.random.default_rng(5).standard_normal((7, *verified.manifest.input.shape)).astype(np.float32)
    assert verified.executor.run(rows).logits.tobytes() == alone_at_c(exports / f"{name}.pt2", rows).tobytes()


@pytest.mark.slow
def test_a_row_mixing_program_is_refused_by_the_self_test(repository: tuple[Path, Path]) -> None:
    refused = load(repository[1], "rowmix")
    assert isinstance(refused, Refusal)
    assert refused.reason.startswith("self-test"), refused.reason
    assert "failed" in refused.reason, refused.reason


def test_a_hand_dropped_program_gets_the_same_checks(repository: tuple[Path, Path], tmp_path: Path) -> None:
    repo = repository[1]
    source, target = repo / "tabular" / "1", repo / "tabular" / "2"
    target.mkdir()
    marker = tmp_path / "marker"
    members = crafted(marker, tmp_path)["guards code"]
    write_archive(target / "model.pt2", members)
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["weights_sha256"] = sha256_of(target / "model.pt2")
    (target / "manifest.json").write_text(json.dumps(manifest))
    refused = load(repo, "tabular", 2)
    assert isinstance(refused, Refusal)
    assert "carries guards code" in refused.reason, refused.reason
    assert not marker.exists()
    shutil.rmtree(target)


@pytest.mark.slow
def test_the_server_answers_a_program_with_its_bits(repository: tuple[Path, Path], tmp_path: Path) -> None:
    exports, repo = repository
    served = tmp_path / "served"
    served.mkdir()
    (served / "tabular").symlink_to(repo / "tabular", target_is_directory=True)
    (tmp_path / "logs").mkdir()
    running = start_server(served, tmp_path / "logs", "--chunk-rows", str(C))
    try:
        rows = np.random.default_rng(9).standard_normal((37, 12)).astype(np.float32)
        with running.client() as http:
            v1 = http.post("/v1/models/tabular:predict", json={"instances": rows.tolist()})
            metadata = http.get("/v2/models/tabular").json()
    finally:
        stop_server(running)
    assert v1.status_code == 200, v1.text
    logits = np.asarray([p["logits"] for p in v1.json()["predictions"]], dtype=np.float32)
    assert logits.tobytes() == alone_at_c(exports / "tabular.pt2", rows).tobytes()
    assert metadata["platform"] == FORMAT


def _node(target: str, **arguments: dict[str, object]) -> dict[str, object]:
    inputs = [{"name": "input", "arg": {"as_tensor": {"name": "x"}}, "kind": 1}]
    inputs += [{"name": name, "arg": arg, "kind": 1} for name, arg in arguments.items()]
    return {"target": target, "inputs": inputs, "outputs": [{"as_tensor": {"name": "y"}}], "name": "y"}


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (_node("torch.ops.aten.batch_norm.default", training={"as_bool": True}), "BatchNorm op batch_norm.default"),
        (_node("torch.ops.aten._native_batch_norm_legit.no_stats"), "BatchNorm with batch statistics"),
        (_node("torch.ops.aten.bernoulli.p"), "random op bernoulli.p"),
        (_node("torch.ops.aten.rand_like.default"), "random op rand_like.default"),
        (
            _node("torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default", dropout_p={"as_float": 0.1}),
            "attention with dropout_p 0.1",
        ),
        (_node("torch.ops.aten.relu.default", approximate={"as_graph": {}}), "as_graph argument"),
        (_node("torch.ops.aten.relu.default", x={"as_string": "os.system('id')"}), "not a short plain word"),
    ],
)
def test_train_mode_and_non_data_nodes_are_refused(node: dict[str, object], reason: str) -> None:
    with pytest.raises(ImportRefused, match=re.escape(reason)):
        check_node(node, 0)


def test_attention_without_dropout_is_accepted() -> None:
    node = _node("torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default", dropout_p={"as_float": 0.0})
    assert check_node({**node, "metadata": {"stack_trace": "x"}}, 0)["metadata"] == {}

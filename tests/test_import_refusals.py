"""Crafted model files: each refused by `python -m models.package` with its reason in one line, exit 2, no
version directory written, and its payload never run (the marker file it would write never exists)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from import_helpers import (
    PT2_PROGRAM_CASES,
    MarkerPayload,
    dropout_graph,
    export_torch,
    linear_graph,
    live_pt2_members,
    payload_pickle,
    pt2_members,
    torchscript_bytes,
    with_external_weight,
    write_model,
    zip_archive,
)
from onnx import helper

from models.package import main as package

Crafter = Callable[[Path, Path], Path]  # (directory, marker) -> the crafted model file
# The hand-made archives of import_helpers (tests/test_import_pt2.py crafts them from real exports too).
REASONS = {
    "pt2 pickled weight": "verifier dialect ['TRAINING'] is not ATEN",  # exported without run_decompositions()
    "pt2 sample-input fallback": "verifier dialect ['TRAINING'] is not ATEN",
    "pt2 shape expression": "the program is missing fields",
    "pt2 guards code": "the program is missing fields",
    "pt2 non-ATen target": "the program is missing fields",
}


def _pickle(directory: Path, marker: Path) -> Path:
    path = directory / "model.onnx"
    path.write_bytes(payload_pickle(marker))
    return path


def _torch_save(directory: Path, marker: Path) -> Path:
    path = directory / "model.pt"
    torch.save({"weights": MarkerPayload(marker)}, path)
    return path


def _torchscript(directory: Path, marker: Path) -> Path:
    path = directory / "model.pt"
    path.write_bytes(torchscript_bytes(marker))
    return path


def _pt2(case: str) -> Crafter:
    def craft(directory: Path, marker: Path) -> Path:
        return zip_archive(directory / "model.pt2", pt2_members(marker)[case])

    return craft


def _mar(directory: Path, marker: Path) -> Path:
    """A TorchServe model archive: a manifest naming a handler, whose Python TorchServe runs at load."""
    handler = f"open({str(marker)!r}, 'w').write('ran')\n".encode()
    manifest = b'{"model": {"modelName": "m", "handler": "handler.py", "serializedFile": "model.pt"}}'
    members = {"MAR-INF/MANIFEST.json": manifest, "handler.py": handler, "model.pt": payload_pickle(marker)}
    return zip_archive(directory / "model.mar", members)


def _escaping(location: str) -> Crafter:
    def craft(directory: Path, marker: Path) -> Path:
        (directory.parent / "escape.bin").write_bytes(b"\0" * 48)
        return write_model(with_external_weight(linear_graph(), location), directory / "model.onnx")

    return craft


def _onnx(model: Callable[[], onnx.ModelProto]) -> Crafter:
    def craft(directory: Path, marker: Path) -> Path:
        return write_model(model(), directory / "model.onnx")

    return craft


def _custom_op() -> onnx.ModelProto:
    node = helper.make_node("Evil", ["pre"], ["logits"], domain="com.example")
    return linear_graph(extra_nodes=(node,), domain="")


def _random_op() -> onnx.ModelProto:
    node = helper.make_node("RandomNormalLike", ["pre"], ["noise"])
    return linear_graph(extra_nodes=(node, helper.make_node("Add", ["pre", "noise"], ["logits"])))


def _train_bn() -> onnx.ModelProto:
    stats = [onnx.numpy_helper.from_array(np.ones(3, np.float32), name) for name in ("s", "o", "m", "v")]
    node = helper.make_node("BatchNormalization", ["pre", "s", "o", "m", "v"], ["logits"], training_mode=1)
    return linear_graph(extra_nodes=(node,), extra_initializers=tuple(stats))


def _train_export(directory: Path, marker: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)).train()
    return export_torch(model, torch.randn(2, 4), directory / "model.onnx")


CASES: dict[str, tuple[Crafter, str]] = {
    "pickle": (_pickle, "is a pickle"),
    "torch.save": (_torch_save, "torch.save archive"),
    "TorchScript": (_torchscript, "TorchScript archive"),
    **{case: (_pt2(case), REASONS[case]) for case in PT2_PROGRAM_CASES},
    "AOTInductor package": (_pt2("AOTInductor package"), "AOTInductor package"),
    "TorchServe .mar": (_mar, "a TorchServe .mar archive (its handler is Python code run on load)"),
    "ONNX train-mode export (Dropout)": (_train_export, "Dropout in training mode"),
    "ONNX Dropout training_mode=True": (_onnx(lambda: dropout_graph(True)), "Dropout in training mode"),
    "ONNX BatchNormalization training_mode=1": (_onnx(_train_bn), "BatchNormalization in training mode"),
    "ONNX random op": (_onnx(_random_op), "random op RandomNormalLike"),
    "ONNX custom domain": (_onnx(_custom_op), "custom op domain 'com.example'"),
    "ONNX external data '../escape.bin'": (_escaping("../escape.bin"), "not a plain file name"),
    "ONNX external data absolute path": (_escaping("/etc/passwd"), "not a plain file name"),
    "ONNX external data in a subdirectory": (_escaping("sub/w.bin"), "not a plain file name"),
    "ONNX fixed batch dimension": (_onnx(lambda: linear_graph(batch=1)), "fixed batch dimension of 1"),
    "ONNX opset 7": (_onnx(lambda: linear_graph(opset=7)), "outside the served range"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_crafted_file_is_refused_before_anything_runs(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    craft, reason = CASES[case]
    marker = tmp_path / "marker"
    directory = tmp_path / "upload"
    directory.mkdir()
    model = craft(directory, marker)
    capsys.readouterr()  # what crafting printed (the exporter's warnings) is not the CLI's answer
    repository = tmp_path / "repository"
    assert package(["--model", str(model), "--name", "crafted", "--repository", str(repository)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert reason in err, err
    assert not (repository / "crafted").exists() or not any((repository / "crafted").iterdir())
    assert not marker.exists()


def test_the_payload_is_live(tmp_path: Path) -> None:
    """The control: the crafted pickle does write the marker when something unpickles it."""
    marker = tmp_path / "marker"
    pickle.loads(payload_pickle(marker))  # our own payload, to prove the marker check can fail
    assert marker.read_text() == "pwned"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["pt2 pickled weight", "pt2 sample-input fallback"])
def test_torch_export_load_would_run_the_pt2_payload(case: str, tmp_path: Path) -> None:
    """The control for the two real crafted archives: torch.export.load (in a child process) runs the payload,
    so refusing them before any member is read is what keeps the marker absent above."""
    marker = tmp_path / "marker"
    archive = zip_archive(tmp_path / "model.pt2", live_pt2_members(marker)[case])
    code = f"import torch\ntry:\n    torch.export.load({str(archive)!r})\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=600)
    assert marker.read_text() == "pwned"


def test_external_data_outside_the_sibling_file_bounds_is_refused(tmp_path: Path) -> None:
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)  # W needs 48 bytes
    path = write_model(with_external_weight(linear_graph(), "w.bin"), tmp_path / "model.onnx")
    assert package(["--model", str(path), "--name", "x", "--repository", str(tmp_path / "repo")]) == 2


def test_external_data_in_the_sibling_file_is_inlined_and_published(tmp_path: Path) -> None:
    model = linear_graph()
    weight = next(t for t in model.graph.initializer if t.name == "W")
    (tmp_path / "model.onnx.data").write_bytes(b"\1" * 16 + weight.raw_data)
    path = write_model(with_external_weight(model, "model.onnx.data", offset=16), tmp_path / "model.onnx")
    assert package(["--model", str(path), "--name", "x", "--repository", str(tmp_path / "repo")]) == 0
    published = tmp_path / "repo" / "x" / "1"
    assert sorted(p.name for p in published.iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data"]


def test_a_sparse_constant_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Sparse tensors are refused whole: their values could name external data that no check above inlines."""
    values = onnx.numpy_helper.from_array(np.ones(1, np.float32), "values")
    indices = onnx.numpy_helper.from_array(np.zeros(1, np.int64), "indices")
    sparse = helper.make_sparse_tensor(values, indices, [3])
    node = helper.make_node("Constant", [], ["extra"], sparse_value=sparse)
    add = helper.make_node("Add", ["pre", "extra"], ["logits"])
    path = write_model(linear_graph(extra_nodes=(node, add)), tmp_path / "model.onnx")
    assert package(["--model", str(path), "--name", "x", "--repository", str(tmp_path / "repo")]) == 2
    assert "sparse tensor attribute 'sparse_value' is refused" in capsys.readouterr().err
    assert not (tmp_path / "repo").exists()

"""The checks both imported formats share when a version directory is opened (service/engine/
executor_imported.py), each refused at load with its one-line reason: a manifest whose format is not the
file's, settings that are not CPU float32, and a manifest whose signature is not the graph's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from export_common import export_pt2
from import_helpers import export_torch
from torch import nn

from models.package import main as package
from service.lifecycle.loader import Refusal, Verified, verify_version
from service.observability.metrics import Metrics
from service.settings import Settings

FORMATS = ("onnx", "pt2")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (N, 4) -> (N, 3) linear model packaged as `onnx` and as `pt2`."""
    exports, repo = tmp_path_factory.mktemp("exports"), tmp_path_factory.mktemp("repository")
    torch.manual_seed(0)
    model, example = nn.Sequential(nn.Linear(4, 3)).eval(), torch.randn(4, 4)
    files = {
        "onnx": export_torch(model, example, exports / "m.onnx"),
        "pt2": export_pt2(model, example, exports / "m.pt2"),
    }
    for fmt, path in files.items():
        assert package(["--model", str(path), "--name", fmt, "--repository", str(repo)]) == 0
    return repo


def tampered(repo: Path, fmt: str, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Version 2 of `fmt`: version 1's files with the manifest edited."""
    source, target = repo / fmt / "1", repo / fmt / "2"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def load(repo: Path, fmt: str, version: int, **settings: Any) -> Verified | Refusal:
    chosen = Settings(repository=repo, chunk_rows=8, **settings)
    return verify_version(fmt, version, repo / fmt / str(version), chosen, Metrics())


def reason(outcome: Verified | Refusal) -> str:
    assert isinstance(outcome, Refusal), outcome
    return outcome.reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_both_formats_load_untampered(repository: Path, fmt: str) -> None:
    verified = load(repository, fmt, 1)
    assert isinstance(verified, Verified), verified
    assert verified.self_test.failures == 0


@pytest.mark.parametrize(("fmt", "expected"), [
    ("onnx", "model.onnx does not hold a torch.export archive (the manifest's format); its bytes are onnx"),
    ("pt2", "model.pt2 does not hold an ONNX graph (the manifest's format); its bytes are pt2"),
])  # fmt: skip
def test_a_manifest_naming_the_other_format_is_refused(repository: Path, fmt: str, expected: str) -> None:
    other = "pt2" if fmt == "onnx" else "onnx"
    tampered(repository, fmt, lambda manifest: manifest["architecture"].update(arch=other))
    assert expected in reason(load(repository, fmt, 2))


@pytest.mark.parametrize("fmt", FORMATS)
def test_bfloat16_is_refused_for_both_formats(repository: Path, fmt: str) -> None:
    what = "an ONNX graph" if fmt == "onnx" else "a torch.export archive"
    expected = f"imported models ({what}) run on the CPU in float32 (device cpu or auto, dtype float32)"
    assert expected in reason(load(repository, fmt, 1, dtype="bfloat16"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_manifest_signature_that_is_not_the_graphs_is_refused(repository: Path, fmt: str) -> None:
    tampered(repository, fmt, lambda manifest: manifest["input"].update(shape=[5]))
    refused = reason(load(repository, fmt, 2))
    assert "is not the manifest's" in refused, refused
    assert "(4,)" in refused, refused
    assert "(5,)" in refused, refused
    tampered(repository, fmt, lambda manifest: manifest.update(class_labels=["a", "b"]))
    refused = reason(load(repository, fmt, 2))
    assert "is not the manifest's" in refused, refused
    assert ", 3)" in refused, refused
    assert ", 2)" in refused, refused

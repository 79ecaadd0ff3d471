"""`python -m models.package`: publishes checked ONNX files as numbered versions with their manifest; every
refusal is one line on stderr, exit 2, and no version directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from import_helpers import linear_graph, write_model

from models.checkpoint import sha256_of
from models.package import main as package

ROOT = Path(__file__).resolve().parents[1]


def test_publishes_versions_with_the_graphs_signature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(linear_graph(features=4, classes=3), tmp_path / "exported.onnx")
    args = ["--model", str(model), "--name", "lin", "--repository", str(tmp_path / "repo"), "--labels", "a,b,c"]
    assert package([*args, "--feature-names", "w,x,y,z"]) == 0
    assert package(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "repo" / "lin" / "1"), str(tmp_path / "repo" / "lin" / "2")]
    manifest = json.loads((tmp_path / "repo" / "lin" / "1" / "manifest.json").read_text())
    assert manifest["architecture"] == {
        "file": "model.onnx",
        "input_name": "input",
        "input_shape": [4],
        "output_name": "logits",
        "num_classes": 3,
        "opset": 18,
        "data_file": "",
        "data_sha256": "",
        "arch": "onnx",
    }
    assert manifest["weights_sha256"] == sha256_of(model)
    assert manifest["input"] == {"shape": [4], "dtype": "float32", "feature_names": ["w", "x", "y", "z"]}
    assert manifest["class_labels"] == ["a", "b", "c"]
    assert manifest["training"] == {"imported_from": "exported.onnx", "format": "onnx"}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--labels", "a,b"], "--labels gives 2 distinct labels; the model has 3 outputs"),
        (["--labels", "a,a,b"], "--labels gives 3 distinct labels; the model has 3 outputs"),
        (["--feature-names", "x,y"], "--feature-names gives 2 names; one input row has 4 values"),
        (["--name", "../up"], "invalid model name '../up'"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(
    extra: list[str], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_model(linear_graph(), tmp_path / "model.onnx")
    args = ["--model", str(model), "--name", "lin", "--repository", str(tmp_path / "repo"), *extra]
    assert package(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert reason in err, err
    assert not (tmp_path / "repo").exists()


def test_the_real_cli_refuses_a_missing_file_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "models.package", "--model", str(tmp_path / "none.onnx"), "--name", "x"]
    result = subprocess.run(
        [*command, "--repository", str(tmp_path / "repo")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert (
        result.stderr
        == "python -m models.package: refused: cannot read model file none.onnx: No such file or directory\n"
    )
    assert not (tmp_path / "repo").exists()

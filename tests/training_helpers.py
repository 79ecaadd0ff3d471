"""Helpers shared by the training tests: run the CLI in-process or as `python -m training`, read results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from training.cli import main

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "invariant-train: error: "

# Fast settings: the 480-row synthetic set, one narrow hidden layer, two epochs (well under a second).
FAST = ["--data", "synthetic", "--hidden", "16", "--epochs", "2", "--batch-size", "64"]


def train(repository: Path, *args: str) -> int:
    """`main(argv)` in-process with the fast settings first (later flags override them)."""
    return main([*FAST, "--repository", str(repository), *args])


def run_module(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`python -m training ARGS` in a fresh interpreter (what users and the Makefile run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def manifest_json(version_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((version_dir / "manifest.json").read_text())
    return data


def weights(version_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(version_dir / "model.safetensors"))


def tree(path: Path) -> set[str]:
    """Every file and directory under `path`, relative (empty when `path` does not exist)."""
    return {str(entry.relative_to(path)) for entry in path.rglob("*")} if path.exists() else set()


def assert_one_line_error(stderr: str, expected: str) -> None:
    """Exactly one line on stderr, with the program's prefix, naming the problem."""
    assert stderr.endswith("\n"), repr(stderr)
    assert stderr.count("\n") == 1, repr(stderr)
    assert stderr.startswith(PREFIX), repr(stderr)
    assert expected in stderr, repr(stderr)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def good_csv_text(rows: int = 40) -> str:
    """Two numeric features and a string label in the middle column; classes alternate 'cat'/'dog'."""
    lines = ["a,label,b"]
    for index in range(rows):
        label = "cat" if index % 2 else "dog"
        lines.append(f"{index * 0.5},{label},{(index % 2) * 3.0 + index * 0.01}")
    return "\n".join(lines) + "\n"

"""Helpers of the model-lifecycle tests: repository edits as an operator makes them, and bounded waits."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from waiting import wait_until

Index = list[dict[str, str]]
T = TypeVar("T")


def write_garbage_version(repository: Path, name: str, source: Path, version: int) -> Path:
    """A version with a valid-looking manifest (copied) and corrupt weights, published by one rename."""
    staging = repository / name / f".staging-garbage-{version}"
    staging.mkdir(parents=True)
    shutil.copy(source / "manifest.json", staging / "manifest.json")
    size = (source / "model.safetensors").stat().st_size
    (staging / "model.safetensors").write_bytes(bytes(range(256)) * (size // 256) + b"\x00" * (size % 256))
    target = repository / name / str(version)
    os.rename(staging, target)
    return target


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 60.0) -> T:
    """Poll `probe` until it returns something other than None (tests/waiting.py)."""
    return wait_until(what, probe, timeout_s)


def index(http: httpx.Client, body: dict[str, Any] | None = None) -> Index:
    response = http.post("/v2/repository/index", json=body) if body is not None else http.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    entries: Index = response.json()
    return entries


def states(http: httpx.Client, name: str) -> dict[str, str]:
    """version -> state of one model in the index."""
    return {entry["version"]: entry["state"] for entry in index(http) if entry["name"] == name}


def entry(http: httpx.Client, name: str, version: str) -> dict[str, str] | None:
    return next((e for e in index(http) if e["name"] == name and e["version"] == version), None)


def until_state(http: httpx.Client, name: str, version: str, state: str | None) -> Callable[[], bool | None]:
    """A probe for wait_for: true once `version` is in `state` (None: absent from the index)."""

    def probe() -> bool | None:
        return True if states(http, name).get(version) == state else None

    return probe

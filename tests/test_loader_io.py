"""A version's files as the loader meets them: regular files only, bounded reads, shapes checked against
the weights header before anything is allocated, and a touch that changes nothing reloads nothing
(issue 20 items 3, 4 and 5)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from checkpoints import TINY_MLP, write_checkpoint

import models.checkpoint
from models.checkpoint import CheckpointError, load_checkpoint, read_manifest
from models.config import config_from_dict
from models.files import MAX_MANIFEST_BYTES
from models.labels import LabelsError, read_labels
from service.lifecycle.loader import scan_repository
from service.lifecycle.registry import ModelRegistry
from service.observability.metrics import Metrics
from service.settings import Settings


def _returns_within(function: object, timeout_s: float = 10.0) -> BaseException | None:
    """Run `function` on a daemon thread; the exception it raised, failing the test if it is still blocked."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            function()  # type: ignore[operator]
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert outcome, "the read blocked"
    return outcome[0]


def _release(fifo: Path) -> None:
    """Open the FIFO's write end once: a reader blocked on it (the bug) returns; ENXIO when none waits."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_manifest_is_refused_at_once(tmp_path: Path) -> None:
    version_dir = write_checkpoint(tmp_path, "m")
    (version_dir / "manifest.json").unlink()
    os.mkfifo(version_dir / "manifest.json")
    try:
        error = _returns_within(lambda: read_manifest(version_dir))
    finally:  # a reader still blocked (before the fix) is released by a writer
        _release(version_dir / "manifest.json")
    assert isinstance(error, CheckpointError)
    assert str(error) == "unreadable manifest manifest.json: not a regular file (a FIFO)"


@pytest.mark.parametrize("file_name", ["manifest.json", "model.safetensors"])
def test_a_file_linked_to_dev_zero_is_refused_without_reading(tmp_path: Path, file_name: str) -> None:
    version_dir = write_checkpoint(tmp_path, "m")
    (version_dir / file_name).unlink()
    (version_dir / file_name).symlink_to("/dev/zero")
    error = _returns_within(lambda: load_checkpoint(version_dir))
    assert isinstance(error, CheckpointError)
    assert "not a regular file (a device)" in str(error)


def test_a_manifest_over_the_cap_is_refused_without_reading_it(tmp_path: Path) -> None:
    version_dir = write_checkpoint(tmp_path, "m")
    with (version_dir / "manifest.json").open("r+b") as handle:
        handle.truncate(MAX_MANIFEST_BYTES + 1)  # sparse: no disk written
    with pytest.raises(CheckpointError, match=f"larger than {MAX_MANIFEST_BYTES} bytes"):
        read_manifest(version_dir)


def test_a_fifo_labels_file_is_refused_at_once(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, "m")
    os.mkfifo(tmp_path / "m" / "labels.json")
    try:
        error = _returns_within(lambda: read_labels(tmp_path / "m"))
    finally:
        _release(tmp_path / "m" / "labels.json")
    assert isinstance(error, LabelsError)
    assert "not a regular file (a FIFO)" in str(error)


def _claim_hidden(version_dir: Path, hidden: list[int]) -> None:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["architecture"]["hidden"] = hidden
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def test_a_manifest_wider_than_its_weights_is_refused_before_anything_is_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_dir = write_checkpoint(tmp_path, "m")  # hidden (32, 32), weights sha256 valid
    _claim_hidden(version_dir, [4096, 4096, 4096])
    built: list[object] = []
    monkeypatch.setattr(models.checkpoint, "build_model", built.append)
    monkeypatch.setattr(models.checkpoint, "load_file", built.append)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(version_dir)
    assert str(refused.value) == "shape mismatch: blocks.0.weight manifest [4096, 16] weights [32, 16]"
    assert built == []  # neither the model nor the weights were materialized


def test_a_weights_header_that_lies_about_its_sizes_is_refused(tmp_path: Path) -> None:
    version_dir = write_checkpoint(tmp_path, "m")
    weights = version_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-4])  # the last tensor's range now runs past the end of the file
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["weights_sha256"] = hashlib.sha256(data[:-4]).hexdigest()  # a valid sha256 of the lying file
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CheckpointError,
        match=r"unreadable weights: header entry .standardize.std.: bytes 8032..8096 do not hold F32 \[16\]",
    ):
        load_checkpoint(version_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden": [32] * 1000}, "at most 256 layers"),
        ({"hidden": [1 << 20]}, "of at most 65536 units"),
        ({"num_classes": 1 << 30}, "at most 65536 classes"),
        ({"in_features": 1 << 40}, "input values per row"),
        ({"hidden": [32.5]}, "must be integers"),
    ],
)
def test_the_architecture_a_manifest_claims_is_bounded_before_it_is_built(
    change: dict[str, object], message: str
) -> None:
    config = {"arch": "mlp", "in_features": 16, "num_classes": 4, "hidden": [32, 32]} | change
    with pytest.raises(ValueError, match=message):
        config_from_dict(config)


def test_touching_a_served_version_does_not_reload_it_and_a_content_change_does(tmp_path: Path) -> None:
    """What a poll does (scan, then reconcile), driven step by step: no timing involved."""
    version_dir = write_checkpoint(tmp_path, "tiny", TINY_MLP)
    registry = ModelRegistry(Settings(repository=tmp_path, model_control="none"), Metrics())
    manifest = version_dir / "manifest.json"

    async def poll() -> None:
        registry._disk = await asyncio.to_thread(scan_repository, tmp_path)
        loads = registry._reconcile(registry._disk)
        if loads:
            await asyncio.wait(loads)

    async def scenario() -> tuple[bool, bool, bool]:
        await registry.start()
        try:
            first = registry.get_ready("tiny").batcher
            stat = manifest.stat()
            os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touch: mtime only
            await poll()
            kept = registry.get_ready("tiny").batcher is first
            await poll()  # the new stamp is remembered: nothing to compare again
            still = registry.get_ready("tiny").batcher is first
            manifest.write_text(json.dumps(json.loads(manifest.read_text())))  # same manifest, other bytes
            await poll()
            reloaded = registry.get_ready("tiny").batcher is not first
            return kept, still, reloaded
        finally:
            await registry.close()

    assert asyncio.run(scenario()) == (True, True, True)

"""models.checkpoint: versions never overwritten, atomic writes, sha256 verified, strict loads, no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from models import checkpoint
from models.architectures import build_model
from models.checkpoint import CheckpointError, Manifest, load_checkpoint, save_checkpoint
from models.config import CNNConfig, InputSpec, MLPConfig
from models.scan import NOT_A_VERSION, IgnoredEntry, list_model_names, list_versions, scan_versions
from models.versions import parse_version

ROOT = Path(__file__).resolve().parents[1]
MLP = MLPConfig(in_features=6, num_classes=3, hidden=(8, 8), norm="batch", dropout=0.2)
CNN = CNNConfig(in_channels=1, height=4, width=4, num_classes=3, channels=(4,), norm="batch")


def trained_model(config: MLPConfig | CNNConfig = MLP, seed: int = 0) -> nn.Module:
    """A model whose BatchNorm running statistics moved away from (0, 1) through train-mode batches."""
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *config.input_shape) * 2 + 1)
    return model


def manifest_for(config: MLPConfig | CNNConfig = MLP, name: str = "m") -> Manifest:
    return Manifest(
        name=name,
        version=0,
        architecture=config,
        input=InputSpec(shape=config.input_shape, feature_names=()),
        class_labels=("a", "b", "c"),
        training={"seed": 0},
        epochs=({"epoch": 1, "val_accuracy": 0.5},),
        final_metrics={"val_accuracy": 0.5},
    )


def save(repository: Path, config: MLPConfig | CNNConfig = MLP, seed: int = 0) -> Path:
    return save_checkpoint(repository, trained_model(config, seed), manifest_for(config))


def rewrite_weights(version_dir: Path, state: dict[str, torch.Tensor]) -> None:
    """Replace the weights and fix the manifest's sha256, so only the strict-load checks can refuse them."""
    weights = version_dir / "model.safetensors"
    save_file(state, str(weights))
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("config", [MLP, CNN], ids=["mlp", "cnn"])
def test_round_trip_restores_every_tensor_and_the_eval_outputs_bit_for_bit(
    tmp_path: Path, config: MLPConfig | CNNConfig
) -> None:
    model = trained_model(config)
    version_dir = save_checkpoint(tmp_path, model, manifest_for(config))
    assert version_dir == tmp_path / "m" / "1"
    loaded, manifest = load_checkpoint(version_dir)
    original, restored = model.state_dict(), loaded.state_dict()
    assert sorted(original) == sorted(restored)
    assert all(torch.equal(original[key], restored[key]) for key in original)
    assert manifest.version == 1
    assert manifest.architecture == config
    assert manifest.class_labels == ("a", "b", "c")
    assert manifest.weights_sha256 == hashlib.sha256((version_dir / "model.safetensors").read_bytes()).hexdigest()
    x = torch.randn(5, *config.input_shape)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_published_files_are_readable_like_their_directory(tmp_path: Path) -> None:
    """A server running as another user (docker) reads the version; nothing is writable but by the owner."""
    version_dir = save(tmp_path)
    modes = {path.name: path.stat().st_mode & 0o777 for path in (version_dir, *version_dir.iterdir())}
    assert modes == {"1": 0o755, "model.safetensors": 0o644, "manifest.json": 0o644}


def test_versions_count_up_and_never_overwrite(tmp_path: Path) -> None:
    first = save(tmp_path, seed=0)
    first_bytes = (first / "model.safetensors").read_bytes(), (first / "manifest.json").read_bytes()
    save(tmp_path, seed=1)
    save(tmp_path, seed=2)
    assert list_versions(tmp_path, "m") == [1, 2, 3]
    assert first_bytes == ((first / "model.safetensors").read_bytes(), (first / "manifest.json").read_bytes())
    (tmp_path / "m" / "7").mkdir()  # a gap: the next version is the largest plus one
    assert save(tmp_path) == tmp_path / "m" / "8"


@pytest.mark.parametrize(
    ("text", "number"),
    [("1", 1), ("12", 12), ("0", None), ("007", None), ("\u00b2", None), ("\u0663", None), ("1 ", None), ("", None)],
)
def test_a_version_has_one_canonical_spelling(text: str, number: int | None) -> None:
    assert parse_version(text) == number


def test_non_canonical_directories_are_ignored_with_a_reason_and_the_next_version_counts_past_them(
    tmp_path: Path,
) -> None:
    """Found today: a `²` directory crashed training (int('²') fails) and `007` was taken for version 7."""
    for odd in ("\u00b2", "007", ".staging-abc"):
        (tmp_path / "m" / odd).mkdir(parents=True)
    (tmp_path / "m" / "notes.txt").write_text("files are not versions and not reported")
    assert save(tmp_path) == tmp_path / "m" / "1"
    versions, ignored = scan_versions(tmp_path, "m")
    assert versions == {1: tmp_path / "m" / "1"}
    assert ignored == [
        IgnoredEntry(".staging-abc", "staging directory of a checkpoint still being written"),
        IgnoredEntry("007", NOT_A_VERSION),
        IgnoredEntry("\u00b2", NOT_A_VERSION),
    ]
    assert NOT_A_VERSION == "not a version: a version directory is named by ASCII digits without leading zeros"
    assert list_model_names(tmp_path) == ["m"]


def test_invalid_name_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="invalid model name"):
        save_checkpoint(tmp_path, trained_model(), manifest_for(name="../escape"))
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_weights_leaves_no_version_and_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_write(state: dict[str, torch.Tensor], path: str) -> None:
        Path(path).write_bytes(b"\x00" * 10)  # a partial file, then the "crash"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", half_write)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path)
    assert list_versions(tmp_path, "m") == []
    assert not (tmp_path / "m").exists()  # not even the model directory the write created (issue 28)


def test_failure_while_writing_the_manifest_leaves_no_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = checkpoint._fsync

    def failing_fsync(path: Path) -> None:
        if path.name == "manifest.json":
            raise OSError(5, "Input/output error")
        real_fsync(path)

    monkeypatch.setattr(checkpoint, "_fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        save(tmp_path)
    assert list_versions(tmp_path, "m") == []
    assert not (tmp_path / "m").exists()  # not even the model directory the write created (issue 28)


def test_process_killed_before_publishing_leaves_only_an_ignored_staging_dir(tmp_path: Path) -> None:
    """A hard kill (no cleanup runs) right before the rename: files are complete but unpublished."""
    script = textwrap.dedent(
        f"""
        import os
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_checkpoint import save
        os.rename = lambda *args: os._exit(9)  # the process dies where the version would be published
        save(__import__("pathlib").Path({str(tmp_path)!r}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 9, result.stderr
    leftovers = list((tmp_path / "m").iterdir())
    assert len(leftovers) == 1
    assert leftovers[0].name.startswith(".staging-")
    assert sorted(path.name for path in leftovers[0].iterdir()) == ["manifest.json", "model.safetensors"]
    assert list_versions(tmp_path, "m") == []
    assert list_model_names(tmp_path) == []
    assert save(tmp_path) == tmp_path / "m" / "1"  # the next writer is not confused by the leftover
    # ... and removes it: its name proves its writer (pid, start time, namespace, boot) is gone.
    assert [path.name for path in (tmp_path / "m").iterdir()] == ["1"]


def test_changed_weights_fail_the_sha256_check(tmp_path: Path) -> None:
    version_dir = save(tmp_path)
    weights = version_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor value; the file is still valid safetensors
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(version_dir)


def test_manifest_sha256_must_match(tmp_path: Path) -> None:
    version_dir = save(tmp_path)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["weights_sha256"] = "0" * 64
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(version_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("drop_running_var", r"BatchNorm running statistics missing from the weights: \['blocks.1.running_var'\]"),
        ("drop_weight", r"weights missing from the checkpoint: \['head.weight'\]"),
        ("extra", r"unexpected weights in the checkpoint: \['extra.tensor'\]"),
        ("shape", r"shape mismatch: head.weight manifest \[3, 8\] weights \[3, 4\]"),
    ],
)
def test_loading_is_strict(tmp_path: Path, change: str, message: str) -> None:
    version_dir = save(tmp_path)
    state = load_file(str(version_dir / "model.safetensors"))
    if change == "drop_running_var":
        del state["blocks.1.running_var"]
    elif change == "drop_weight":
        del state["head.weight"]
    elif change == "extra":
        state["extra.tensor"] = torch.zeros(2)
    else:
        state["head.weight"] = torch.zeros(3, 4)
    rewrite_weights(version_dir, state)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(version_dir)


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    version_dir = save(tmp_path)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="unknown manifest format_version 99"):
        load_checkpoint(version_dir)


def _forbid_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a checkpoint load tried to unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version_dir = save(tmp_path)
    _forbid_unpickling(monkeypatch)
    model, _ = load_checkpoint(version_dir)
    assert isinstance(model, nn.Module)


def test_a_pickle_in_place_of_the_weights_is_refused_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_dir = save(tmp_path)
    torch.save(trained_model().state_dict(), version_dir / "model.safetensors")  # a pickle archive
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["weights_sha256"] = hashlib.sha256((version_dir / "model.safetensors").read_bytes()).hexdigest()
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    _forbid_unpickling(monkeypatch)
    with pytest.raises(CheckpointError, match="unreadable weights"):
        load_checkpoint(version_dir)

"""Model names: the training CLI, the package tool, the checkpoint writer and the server's repository scan
accept exactly the same names, matched whole (a final "\n" is not part of a valid name)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest
from checkpoints import write_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.checkpoint import CheckpointError
from models.onnx_check import ImportRefused
from models.package import _checked
from models.scan import list_model_dirs
from models.versions import is_model_name
from service.lifecycle.loader import scan_model
from training.errors import InputError
from training.options import _name

VALID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True)
NAMES = st.one_of(
    VALID,
    VALID.map(lambda name: name + "\n"),  # `$` matches before a final newline: the nl2\n
    VALID.map(lambda name: name + "\r\n"),
    VALID.map(lambda name: "\n" + name),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=130),
)


def _training_accepts(name: str) -> bool:
    try:
        _name(name, "iris")
    except InputError:
        return False
    return True


def _package_accepts(name: str) -> bool:
    # The name is checked first, before the model file is looked at (which does not exist here).
    try:
        _checked(argparse.Namespace(name=name, model=Path("/nonexistent/model.onnx")))
    except ImportRefused as exc:
        return "invalid model name" not in str(exc)
    except (OSError, CheckpointError):
        return True
    return True


def _server_lists(name: str) -> bool:
    if name in {".", ".."} or len(name.encode()) > 255:
        return False
    with tempfile.TemporaryDirectory() as repository:
        (Path(repository) / name).mkdir()
        return list_model_dirs(Path(repository)) == [name]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NAMES)
def test_training_package_and_server_agree_on_every_name(name: str) -> None:
    valid = is_model_name(name)
    assert _training_accepts(name) == valid
    assert _package_accepts(name) == valid
    assert _server_lists(name) == valid
    if name.endswith("\n"):
        assert not valid


@pytest.mark.parametrize("name", ["nl2\n", "nl2\r\n", "a" * 128 + "\n", "x\ny"])
def test_a_name_with_a_newline_is_refused_by_every_writer_and_never_served(tmp_path: Path, name: str) -> None:
    assert not _training_accepts(name)
    assert not _package_accepts(name)
    with pytest.raises(CheckpointError, match="invalid model name"):
        write_checkpoint(tmp_path, name)
    (tmp_path / name).mkdir()
    (tmp_path / name / "1").mkdir()
    assert list_model_dirs(tmp_path) == []
    assert scan_model(tmp_path, name).versions == {}

"""Repository polling: its cost is bounded by the models and versions, not by junk beside them (issue 20
item 11). Counted in system calls made through `os`, never timed."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from checkpoints import write_checkpoint

from models.scan import MAX_IGNORED, list_model_dirs, scan_versions
from service.lifecycle.loader import scan_repository

JUNK_FILES = 5_000


def _age(*paths: Path) -> None:
    """Set the directories' mtime a minute back: as they are once the racy window after a change is over."""
    past = time.time() - 60
    for path in paths:
        os.utime(path, (past, past))


def _junk_repository(repository: Path) -> Path:
    write_checkpoint(repository, "m")
    write_checkpoint(repository, "m")
    model_dir = repository / "m"
    for index in range(JUNK_FILES):
        (model_dir / f"backup-{index}.bak").write_bytes(b"")
        (repository / f"note-{index}.txt").write_bytes(b"")
    (model_dir / "old").mkdir()
    _age(model_dir, repository)
    return model_dir


def test_junk_files_are_never_statted_and_an_unchanged_directory_is_not_listed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = _junk_repository(tmp_path)
    listed: list[str] = []
    stats = [0]
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path: Any = ".") -> Any:
        listed.append(os.fspath(path))
        return real_scandir(path)

    def stat(*args: Any, **kwargs: Any) -> os.stat_result:
        stats[0] += 1
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    first = scan_repository(tmp_path)
    # 2 * 5,000 junk files: one listing of each directory, no stat per junk file.
    assert stats[0] < 20, stats[0]
    assert sorted(first) == ["m"]
    assert sorted(first["m"].versions) == [1, 2]
    assert [entry.name for entry in first["m"].ignored] == ["old"]

    listed.clear()
    stats[0] = 0
    second = scan_repository(tmp_path)
    assert second == first
    # The root and the model directory did not change: only the two version directories are listed.
    assert sorted(listed) == [str(model_dir / "1"), str(model_dir / "2")]
    assert stats[0] < 20, stats[0]


def test_a_new_version_is_seen_at_the_next_scan(tmp_path: Path) -> None:
    model_dir = _junk_repository(tmp_path)
    assert sorted(scan_repository(tmp_path)["m"].versions) == [1, 2]
    write_checkpoint(tmp_path, "m")  # a rename into the model directory: its mtime moves
    assert sorted(scan_repository(tmp_path)["m"].versions) == [1, 2, 3]
    (model_dir / "3").rename(model_dir / "old-3")
    assert sorted(scan_versions(tmp_path, "m")[0]) == [1, 2]
    write_checkpoint(tmp_path, "n")
    assert list_model_dirs(tmp_path) == ["m", "n"]


def test_the_ignored_directories_reported_are_bounded(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, "m")
    for index in range(MAX_IGNORED + 50):
        (tmp_path / "m" / f"dir-{index}").mkdir()
    versions, ignored = scan_versions(tmp_path, "m")
    assert sorted(versions) == [1]
    assert len(ignored) == MAX_IGNORED

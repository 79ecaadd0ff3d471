"""Listing a repository: which model directories and versions exist, cheap enough to poll every second.

The cost of a poll is bounded by the number of models and versions, not by whatever else lies in the
repository (100,000 editor backups in a model directory raised idle polling from 0.7% to 27% of a core):
a directory is listed again only when its mtime (which every create, remove or rename of an entry moves)
differs from the listing's, and entries are told apart by their d_type (os.scandir), never by a stat each.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from models.staging import STAGING_PREFIX
from models.versions import is_model_name, parse_version

NOT_A_VERSION = "not a version: a version directory is named by ASCII digits without leading zeros"
# A directory whose mtime is this recent is listed again even when the mtime is unchanged: a file system's
# mtime ticks coarser than the changes it records, so a second change in the same tick would go unseen
# (git's "racy" rule). 2 s covers the coarsest clocks in use (FAT), and costs a listing only after a change.
RECENT_NS = 2_000_000_000
MAX_IGNORED = 100  # non-version directories reported per model: enough to see why, bounded for the index
_MAX_CACHED = 10_000  # listings kept (one per model directory and the root); past it the cache starts over


@dataclass(frozen=True)
class IgnoredEntry:
    """A directory inside a model directory that is not a version, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class _Listing:
    device: int
    inode: int
    mtime_ns: int
    directories: tuple[str, ...]  # names of the subdirectories (symlinks to directories included), sorted


_listings: dict[str, _Listing] = {}
_listings_lock = threading.Lock()


def subdirectories(path: Path) -> tuple[str, ...]:
    """The names of `path`'s subdirectories, sorted; () when `path` is not a readable directory."""
    try:
        status = os.stat(path)
        key = os.fspath(path)
        with _listings_lock:
            cached = _listings.get(key)
        if (
            cached is not None
            and (cached.device, cached.inode, cached.mtime_ns) == (status.st_dev, status.st_ino, status.st_mtime_ns)
            and time.time_ns() - status.st_mtime_ns > RECENT_NS
        ):
            return cached.directories
        with os.scandir(path) as entries:
            # is_dir() reads the entry's d_type: a stat only for symlinks (and file systems without d_type).
            directories = tuple(sorted(entry.name for entry in entries if entry.is_dir()))
    except OSError:
        return ()
    with _listings_lock:
        if len(_listings) >= _MAX_CACHED:
            _listings.clear()
        _listings[key] = _Listing(status.st_dev, status.st_ino, status.st_mtime_ns, directories)
    return directories


def scan_versions(repository: Path, name: str) -> tuple[dict[int, Path], list[IgnoredEntry]]:
    """The version directories of `name` (number -> path) and the other directories there, with reasons.

    Files are skipped silently (editor backups, notes); directories are reported (the first MAX_IGNORED) so
    an operator can see why `007` or a staging directory does not serve.
    """
    model_dir = Path(repository) / name
    versions: dict[int, Path] = {}
    ignored: list[IgnoredEntry] = []
    for entry in subdirectories(model_dir):
        number = parse_version(entry)
        if number is not None:
            versions[number] = model_dir / entry
        elif len(ignored) >= MAX_IGNORED:
            continue
        elif entry.startswith(STAGING_PREFIX):
            ignored.append(IgnoredEntry(entry, "staging directory of a checkpoint still being written"))
        else:
            ignored.append(IgnoredEntry(entry, NOT_A_VERSION))
    return versions, ignored


def list_versions(repository: Path, name: str) -> list[int]:
    """Complete versions of `name`, ascending. Staging and other non-version directories are skipped."""
    return sorted(scan_versions(repository, name)[0])


def list_model_dirs(repository: Path) -> list[str]:
    """Directories of the repository whose names are valid model names, with or without versions."""
    return [name for name in subdirectories(Path(repository)) if is_model_name(name)]


def list_model_names(repository: Path) -> list[str]:
    """Models with at least one version directory."""
    return [name for name in list_model_dirs(repository) if list_versions(repository, name)]

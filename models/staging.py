"""Staging directories of checkpoint writes, named after their writer so a later run can prove them abandoned.

A version is written into `<model>/.staging-<pid>-<start>-<pidns>-<boot>-<random>/` and renamed into place.
A writer killed before the rename (SIGKILL, OOM, power loss) leaves that directory behind, possibly hundreds
of megabytes. The name records who wrote it: the process id, the process's start time (clock ticks after
boot, so a reused pid is told apart), the pid namespace (containers have their own) and the boot id. A later
writer removes a staging directory only when all of that proves its writer gone: same boot and namespace,
and no process with that pid and start time. Anything else (another machine or container, an older name
format, a writer still running) is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

STAGING_PREFIX = ".staging-"
_OWNED = re.compile(r"\.staging-(\d+)-(\d+)-(\d+)-([0-9a-f]{8})-")


def staging_prefix() -> str:
    """The prefix of this process's staging directories: `.staging-<pid>-<start>-<pidns>-<boot>-`, or plain
    `.staging-` where the facts cannot be read (not Linux): such directories are never removed by others."""
    start = _start_ticks(os.getpid())
    namespace, boot = _pid_namespace(), _boot_id()
    if start is None or namespace is None or boot is None:
        return STAGING_PREFIX
    return f"{STAGING_PREFIX}{os.getpid()}-{start}-{namespace}-{boot}-"


def remove_abandoned_staging(model_dir: Path) -> list[str]:
    """Remove the staging directories in `model_dir` whose writer provably no longer runs; their names."""
    if not model_dir.is_dir():
        return []
    removed = []
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and is_abandoned(entry.name):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


def is_abandoned(name: str) -> bool:
    match = _OWNED.match(name)
    if match is None:
        return False  # an unknown writer: nothing is proven
    pid, start, namespace, boot = int(match[1]), int(match[2]), int(match[3]), match[4]
    if boot != _boot_id() or namespace != _pid_namespace():
        return False  # another boot, machine or container: its processes cannot be checked from here
    return _start_ticks(pid) != start  # no such process now, or the pid belongs to a later process


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces or parentheses): state is field 3, starttime 22.
    return int(stat.rsplit(b")", 1)[1].split()[19])


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        return None

"""The bytes of a training CSV: a regular file only (a FIFO or a device such as /dev/zero is refused at once,
never waited on or read without end), under a size bound, read once through a stream that hashes exactly
the bytes handed to the parser."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock files

from training.errors import InputError

DEFAULT_MAX_BYTES = 4 << 30  # --max-data-mb default: 4 GiB
HEAD_BYTES = 64 << 10  # sniffing looks at the first 64 KiB (more when the header line is longer)


class HashingReader(io.RawIOBase):
    """The file's bytes, once: `head` first (already read for sniffing), then the rest; sha256 and size of
    everything handed out; refuses to go past `limit` bytes (a file that grows while it is read)."""

    def __init__(self, fd: int, head: bytes, limit: int, where: str, bar: tqdm) -> None:
        self.fd, self.pending, self.limit, self.where, self.bar = fd, head, limit, where, bar
        self.digest = hashlib.sha256(head)
        self.size, self.newlines = len(head), head.count(b"\n")
        bar.update(len(head))

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.pending:
            count = min(len(view), len(self.pending))
            view[:count] = self.pending[:count]
            self.pending = self.pending[count:]
            return count
        chunk = os.read(self.fd, min(len(view), 1 << 20))
        self.size += len(chunk)
        if self.size > self.limit:
            raise InputError(f"{self.where} grew past the size bound of {self.limit >> 20} MiB while it was read")
        self.digest.update(chunk)
        self.newlines += chunk.count(b"\n")
        self.bar.update(len(chunk))
        view[: len(chunk)] = chunk
        return len(chunk)


def open_regular(path: Path, max_bytes: int, where: str) -> int:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{where} is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{where} cannot be read: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    problem = ""
    if stat.S_ISDIR(info.st_mode):
        problem = "is a directory, not a file"
    elif not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file (a FIFO, device or socket); training reads a CSV file from disk"
    elif info.st_size > max_bytes:
        problem = f"is {info.st_size / 2**20:.1f} MiB, over the size bound of {max_bytes >> 20} MiB (--max-data-mb)"
    if problem:
        os.close(fd)
        raise InputError(f"{where} {problem}")
    os.set_blocking(fd, True)
    return fd


def read_head(fd: int, limit: int, where: str) -> bytes:
    """At least HEAD_BYTES (or the whole file), and always the whole header line."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, HEAD_BYTES)
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            raise InputError(f"{where} grew past the size bound of {limit >> 20} MiB while it was read")
        if not chunk or (total >= HEAD_BYTES and b"\n" in chunk):
            return b"".join(parts)


def decode_head(head: bytes, where: str) -> str:
    # The head may end inside a multi-byte character: only that tail is forgiven.
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:
            raise InputError(f"{where} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        return head[: exc.start].decode("utf-8-sig")

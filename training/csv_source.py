"""The bytes of a training CSV: a regular file only (a FIFO or a device such as /dev/zero is refused at once,
never waited on or read without end), under a size bound, read once through a stream that hashes exactly
the bytes handed to the parser."""

from __future__ import annotations

import codecs
import hashlib
import os
import queue
import stat
import threading
from pathlib import Path

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock files

from training.errors import InputError

DEFAULT_MAX_BYTES = 4 << 30  # --max-data-mb default: 4 GiB
_QUEUED_CHUNKS = 64
HEAD_BYTES = 64 << 10  # sniffing looks at the first 64 KiB (more when the header line is longer)


class HashingReader:
    """The file's bytes, once: `head` first (already read for sniffing), then the rest, in the sizes the
    parser asks for; sha256, size and newline count of everything handed out; refuses to go past `limit`
    bytes (a file that grows while it is read).

    Hashing and counting run on a worker thread, overlapped with pandas' tokenizer (which releases the GIL,
    as sha256 does): inline they were 0.10 s of a 0.8 s load of an 85 MB file. `finish()` joins it."""

    def __init__(self, fd: int, head: bytes, limit: int, where: str, bar: tqdm) -> None:
        self.fd, self.pending, self.limit, self.where, self.bar = fd, head, limit, where, bar
        self.digest = hashlib.sha256()
        self.size, self.newlines = len(head), 0
        # Bounded: a worker that falls behind holds at most this many chunks (of the parser's 256 KiB).
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._worker = threading.Thread(target=self._consume, name="csv-hash", daemon=True)
        self._worker.start()
        self._chunks.put(head)
        bar.update(len(head))

    def _consume(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            self.digest.update(chunk)
            self.newlines += chunk.count(b"\n")

    def read(self, size: int = -1) -> bytes:
        if self.pending:
            count = len(self.pending) if size < 0 else size
            chunk, self.pending = self.pending[:count], self.pending[count:]
            return chunk  # hashed already, with the whole head
        chunk = os.read(self.fd, size if size > 0 else 1 << 20)
        self.size += len(chunk)
        if self.size > self.limit:
            raise InputError(f"{self.where} grew past the size bound of {self.limit >> 20} MiB while it was read")
        if chunk:
            self._chunks.put(chunk)
        self.bar.update(len(chunk))
        return chunk

    def finish(self) -> None:
        """Waits for the worker: `digest` and `newlines` then describe every byte handed out. Idempotent."""
        if self._worker.is_alive():
            self._chunks.put(None)
            self._worker.join()


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


def first_bad_utf8(fd: int) -> tuple[int, str] | None:
    """(offset, reason) of the file's first byte that is not UTF-8, read afresh from the start; None if every
    byte is. For the message only: pandas' own error gives the place inside one cell."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        pending = len(decoder.getstate()[0])  # bytes of a character cut at the previous chunk's end
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            return offset - pending + exc.start, exc.reason
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        return offset - len(decoder.getstate()[0]) + exc.start, exc.reason
    return None

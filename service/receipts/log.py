"""The receipts log: append-only JSON lines, one signed receipt per answered row, written on its own thread.

The request path only appends an entry to an in-memory queue (bounded: `backlog_rows`); the writer thread
builds the receipts it was handed unbuilt, writes each batch with one write() per file and fsyncs once per
batch, so a burst of requests costs one fsync. Files rotate by size: `receipts-<UTC time>-<pid>-<n>.jsonl`
(one writer per process, so worker processes never interleave in one file). Old files are never deleted:
keeping and archiving them is the operator's (an audit trail that deletes itself is not one).

Failures degrade, never fail a request: when a write or fsync fails (ENOSPC, EFBIG past a file size limit,
EIO), the rows not written are counted in invariant_receipts_unlogged_total{reason="disk"}, one error line
is logged, the file is closed (a torn last line stays the file's last: nothing is appended after it), and
the log retries on a new file after `RETRY_S`. A write cut short leaves at most one torn line at a file's
end; `read_log` skips it and counts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.observability.metrics import Metrics
from service.receipts.receipt import Receipt, ReceiptError, parse_receipt

log = logging.getLogger("invariant.receipts")
PATTERN = "receipts-*.jsonl"
RETRY_S = 5.0  # after a failed write, answer without logging this long before trying a new file
BACKLOG_ROWS = 65536  # receipts waiting for the writer; beyond, answers go on and the rows are counted unlogged
MAX_LINE_BYTES = 64 * 1024  # a receipt line is about 1 KiB; a longer line is not one

Build = Callable[[], Sequence[dict[str, Any]]]


class ReceiptLog:
    def __init__(self, directory: Path, max_bytes: int, metrics: Metrics, backlog_rows: int = BACKLOG_ROWS) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.backlog_rows = backlog_rows
        self._logged = metrics.receipts_logged
        self._unlogged = metrics.receipts_unlogged
        self._queue: deque[tuple[int, Build]] = deque()
        self._queued_rows = 0
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._name = ""  # the file being written
        self._whole = 0  # whole lines the last write call wrote
        self._size = 0
        self._sequence = 0
        self._retry_at = 0.0  # monotonic time before which a failed log does not try again
        self._failing = False
        self._behind = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="receipts-log", daemon=True)
        self._thread.start()

    def submit(self, rows: int, build: Build) -> None:
        """Queue `rows` receipts, built by `build()` on the writer thread. Never blocks, never raises."""
        with self._wakeup:
            if self._queued_rows + rows > self.backlog_rows:
                self._unlogged.labels("backlog").inc(rows)
                if not self._behind:
                    self._behind = True
                    log.error("receipts log %s: the writer is behind by %d rows; answering without logging "
                              "receipts until it catches up", self.directory, self._queued_rows)  # fmt: skip
                return
            self._queue.append((rows, build))
            self._queued_rows += rows
            self._wakeup.notify()

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, fsync, close. Called once serving has stopped."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    # --- the writer thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._queue and not self._stopping:
                    self._wakeup.wait()
                batch = list(self._queue)
                self._queue.clear()
                self._queued_rows = 0
                self._behind = False
                stopping = self._stopping
            if batch:
                self._write_batch(batch)
            if stopping and not batch:
                break
        self._close_file()

    def _write_batch(self, batch: list[tuple[int, Build]]) -> None:
        lines: list[bytes] = []
        for rows, build in batch:
            try:
                lines += [orjson.dumps(receipt) + b"\n" for receipt in build()]
            except Exception as exc:  # an unreadable key file (NotReady), or a bug: the answers were sent
                self._unlogged.labels("key").inc(rows)
                log.error("receipts log: %d receipts not built: %s", rows, exc)
        if lines and time.monotonic() < self._retry_at:
            self._unlogged.labels("disk").inc(len(lines))
        elif lines:
            self._append(lines)

    def _append(self, lines: list[bytes]) -> None:
        """Write the lines, rotating before a file would pass max_bytes; one fsync for the batch."""
        done = 0  # lines wholly written
        try:
            while done < len(lines):
                self._whole = 0
                if self._fd is None or (self._size and self._size + len(lines[done]) > self.max_bytes):
                    self._open_next()
                assert self._fd is not None
                stop, room = done + 1, self.max_bytes - self._size - len(lines[done])
                while stop < len(lines) and len(lines[stop]) <= room:
                    room -= len(lines[stop])
                    stop += 1
                done += self._write(self._fd, lines[done:stop])
            assert self._fd is not None
            os.fsync(self._fd)
        except OSError as exc:
            self._failed(exc, done, len(lines))
            return
        self._logged.inc(len(lines))
        if self._failing:
            self._failing = False
            log.warning("receipts log %s: writing again (%s)", self.directory, self._name)

    def _write(self, fd: int, lines: list[bytes]) -> int:
        data, written = b"".join(lines), 0
        try:
            while written < len(data):  # a short write is followed by another; that one raises
                written += os.write(fd, data[written:])
        finally:
            self._size += written
            self._whole = data[:written].count(b"\n")
        return len(lines)

    def _failed(self, exc: OSError, done: int, count: int) -> None:
        whole_lines = done + self._whole  # lines in a file, though maybe not fsync'd
        self._logged.inc(whole_lines)
        self._unlogged.labels("disk").inc(count - whole_lines)
        self._close_file()
        self._retry_at = time.monotonic() + RETRY_S
        if not self._failing:
            self._failing = True
            log.error(
                "receipts log %s: cannot write (%s); answering without logging receipts, retrying every %g s "
                "(counted in invariant_receipts_unlogged_total)", self.directory, exc.strerror or exc, RETRY_S,
            )  # fmt: skip

    def _open_next(self) -> None:
        self._close_file()
        self._sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._name = f"receipts-{stamp}-{os.getpid()}-{self._sequence:04d}.jsonl"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.directory / self._name, flags, 0o640)
        self._size = 0
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the new file's name survives a crash too
        finally:
            os.close(directory)

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):  # the failure was counted where the write failed
                os.fsync(fd)
            os.close(fd)


@dataclass
class LogReading:
    """What `read_log` found besides the receipts it yielded."""

    files: int = 0
    receipts: int = 0
    torn: int = 0  # a file's last line without its newline: a write cut short (crash, full disk)
    corrupt: list[str] = field(default_factory=list)  # "<file>:<line>: why" for complete lines that are no receipt


def log_files(path: Path) -> list[Path]:
    """A log directory's files in the order they were written, or the one file given."""
    return sorted(path.glob(PATTERN)) if path.is_dir() else [path]


def read_log(path: Path, reading: LogReading) -> Iterator[Receipt]:
    """Every receipt in a log directory (or one log file), in order; counts go into `reading`."""
    for file in log_files(path):
        reading.files += 1
        with file.open("rb") as lines:
            number = 0
            while line := lines.readline(MAX_LINE_BYTES + 1):
                number += 1
                if not line.endswith(b"\n"):
                    if len(line) <= MAX_LINE_BYTES:  # the end of the file, mid-line
                        reading.torn += 1
                        break
                    _skip_line(lines)
                    reading.corrupt.append(f"{file.name}:{number}: longer than {MAX_LINE_BYTES} bytes")
                    continue
                try:
                    receipt = parse_receipt(orjson.loads(line))
                except (orjson.JSONDecodeError, ReceiptError) as exc:
                    reading.corrupt.append(f"{file.name}:{number}: {exc}"[:300])
                    continue
                reading.receipts += 1
                yield receipt


def _skip_line(lines: Any) -> None:
    while (part := lines.readline(MAX_LINE_BYTES)) and not part.endswith(b"\n"):
        pass

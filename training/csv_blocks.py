"""Parsing a large training CSV in blocks on several threads, with the memory of one parse.

pandas' tokenizer releases the GIL, so blocks of the file (each cut just after a newline) parse side by side:
on the 2-core machine a 91 MiB file parses in 0.27-0.33 s in 4 blocks against 0.48-0.51 s as one stream.
pandas' own parallel reader (it takes only a path) is as fast, but it holds every piece of every column and
their concatenation at once: 149 MB added against 54 MB for one stream. Here each block stays its own small
frame, never joined: the cell check takes the blocks' numeric columns as they are and copies each block into
its rows of the float32 matrix, dropping the block once copied (training/csv_cells.py), so the whole load adds
about 2x the float32 matrix (bench/csv_load.py).

The blocks are read with pread from the descriptor that was opened and checked (never a path); a FileHasher
hashes the file on another thread meanwhile, and the file's identity (inode, size, mtime, ctime, which every
write updates and no user can set back) must be the same after the parse and the hash as before them, so
the hash describes the bytes parsed. (Timestamps move in clock ticks of a few ms: a same-size
rewrite in the very tick of an earlier write, just before the parse, is the one change it cannot see.)

A block parse is only a fast path: any doubt (a quote character anywhere, which could hide a newline inside
a cell; any parser error or warning, whose line number would be the block's; columns typed differently in
two blocks) returns None, and the caller parses the one hashed stream, which reports exact lines.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs in the lock files

from training.errors import InputError

PARALLEL_BYTES = 8 << 20  # files from 8 MiB parse in blocks (smaller ones: one stream, no thread start-up)
BLOCKS_PER_WORKER = 2  # 91 MiB file, 2 threads, max added MB over 9 runs: 4 blocks 108, 8 blocks 120
QUOTE = b'"'
HASH_CHUNK = 1 << 20


def workers() -> int:
    """Threads for the blocks: the CPUs this process may use, at most 4."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(available, 4))


class FileHasher:
    """sha256 and size of the open file `fd` (at most `limit` bytes), read with preadv into one reused buffer
    on a worker thread started at construction, before the parse: the tokenizer threads release the GIL, so
    the hash is done with the parse. (Started after it, beside the GIL-bound cell check, it took the GIL back
    once per chunk, each up to a switch interval late: 0.1-0.2 s later.) `newlines` is set by the parse."""

    def __init__(self, fd: int, limit: int, where: str) -> None:
        self.fd, self.limit, self.where = fd, limit, where
        self.opened = identity(os.fstat(fd))
        self.digest = hashlib.sha256()
        self.size, self.newlines = 0, 0
        self._worker = threading.Thread(target=self._consume, name="csv-hash", daemon=True)
        self._worker.start()

    def _consume(self) -> None:
        buffer = bytearray(HASH_CHUNK)
        view = memoryview(buffer)
        while self.size <= self.limit and (count := os.preadv(self.fd, [buffer], self.size)):
            self.digest.update(view[:count])
            self.size += count

    def join(self) -> None:
        """Waits for the worker (before the descriptor closes), nothing more."""
        self._worker.join()

    def finish(self) -> None:
        """Waits for the worker; refuses a file that grew past the bound or changed since it was opened (the
        parser may have read other bytes than the hash describes)."""
        self.join()
        if self.size > self.limit:
            raise InputError(f"{self.where} grew past the size bound of {self.limit >> 20} MiB while it was read")
        if identity(os.fstat(self.fd)) != self.opened or self.size != self.opened[2]:
            raise InputError(f"{self.where} was written to while it was read; train again once it is complete")


def identity(info: os.stat_result) -> tuple[int, ...]:
    """What any write to a file changes: (device, inode, size, mtime, ctime), times in nanoseconds."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class BlockReader(io.RawIOBase):
    """Bytes [start, stop) of the open file, by pread (the descriptor's offset is left alone), counting the
    newlines and noting any quote character handed out."""

    def __init__(self, fd: int, start: int, stop: int, advance: Callable[[int], None]) -> None:
        super().__init__()
        self.fd, self.position, self.stop, self.advance = fd, start, stop, advance
        self.newlines, self.quoted = 0, False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        left = self.stop - self.position
        chunk = os.pread(self.fd, left if size < 0 else min(size, left), self.position) if left > 0 else b""
        self.position += len(chunk)
        self.newlines += chunk.count(b"\n")
        self.quoted = self.quoted or QUOTE in chunk
        self.advance(len(chunk))
        return chunk


def block_bounds(fd: int, data_start: int, size: int, count: int) -> list[tuple[int, int]]:
    """`count` byte ranges covering [data_start, size), each starting at a line's start."""
    cuts = [data_start]
    for index in range(1, count):
        at = data_start + (size - data_start) * index // count
        if at <= cuts[-1]:  # inside the line the previous cut moved past
            continue
        newline = -1
        while newline < 0 and at < size:  # a line longer than one read: look further
            window = os.pread(fd, 1 << 16, at)
            newline = window.find(b"\n")
            at += len(window) if newline < 0 else newline + 1
        cuts.append(min(at, size))
    cuts.append(size)
    return [(start, stop) for start, stop in itertools.pairwise(cuts) if stop > start]


@dataclass(frozen=True)
class Blocks:
    frames: list[pd.DataFrame]  # the data rows in file order, a frame per block, all typed alike
    newlines: int  # in the blocks (the header line's is not counted)


def parse_blocks(
    fd: int, data_start: int, size: int, parse: Callable[[io.RawIOBase], pd.DataFrame], bar: tqdm
) -> Blocks | None:
    """The data rows (after the header line, which ends at `data_start`) parsed in blocks, in file order;
    None when a block failed, held a quote character, or typed a column unlike another block (the
    caller then parses the one stream). `parse(reader)` parses one block's lines as headerless CSV."""
    count = workers()
    lock = threading.Lock()

    def advance(read: int) -> None:  # tqdm's counter is not safe to bump from several threads at once
        with lock:
            bar.update(read)

    try:  # any doubt (warnings are errors here, read errors too): the stream parse reports it exactly
        bounds = block_bounds(fd, data_start, size, count * BLOCKS_PER_WORKER)
        readers = [BlockReader(fd, start, stop, advance) for start, stop in bounds]
        with ThreadPoolExecutor(count, thread_name_prefix="csv-block") as pool:
            frames = list(pool.map(parse, readers))
    except Exception:
        return None
    if not frames or any(reader.quoted for reader in readers):
        return None
    if any(not frame.dtypes.equals(frames[0].dtypes) for frame in frames):
        return None
    return Blocks(frames, sum(reader.newlines for reader in readers))

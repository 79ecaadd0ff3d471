"""The process's memory between model loads: keep the collector away from long-lived objects, and give the
memory of an unloaded model back (garbage collector and glibc's heap)."""

from __future__ import annotations

import ctypes
import functools
import gc


def freeze_survivors() -> None:
    # Long-lived objects (torch, the models, the app) move out of the collector's reach: otherwise each
    # full collection walks ~200k objects, ~190 ms on this machine, during which no request is answered.
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    # An unloaded model's objects may sit in the frozen generation, where no collection reaches reference
    # cycles: unfreeze, collect (one full pass), and freeze what is still alive.
    gc.unfreeze()
    freeze_survivors()
    # glibc keeps freed heap pages (a model's weights, its executor's buffers) in its arenas; without a trim
    # RSS grows by megabytes with every load/unload cycle (bench/rss_cycles.py; tf-serving #1346).
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None

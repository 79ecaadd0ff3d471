"""The process's memory between model loads: keep the collector away from long-lived objects, and give the
memory of an unloaded model back (garbage collector and glibc's heap); and when full collections run.

The request path never triggers a full (generation 2) collection: `CollectorSchedule` turns the automatic
one off and runs it every FULL_COLLECTION_S on the event loop instead, where it walks only the objects made
since the last freeze (those of the load, ~200k, are frozen: `freeze_survivors`). A pause that would land on
a random request at a random time becomes one at a known period, logged when it is long.

Young collections stay automatic, with a generation-0 threshold of YOUNG_THRESHOLD instead of 700: what
triggers one is the count of tracked objects made minus those freed, and 64 connections' requests in
flight hold ~2,000 (scopes, tasks, coroutines, futures) that all die with their answers. At 700 the count
crossed the threshold ~50 times a second at 64 connections (gc.callbacks: 0.26 ms per young collection,
0.42 ms per middle one, 2.8 us of the loop per request); at 3,000 and above no collection ran in the same
load, and garbage that does make cycles (an exception's traceback) is still collected once it adds up.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import time

log = logging.getLogger("invariant.memory")
FULL_COLLECTION_S = 60.0  # period of the scheduled full collection
NEVER = 2**30  # generation-2 threshold (it counts generation-1 collections): never reached
YOUNG_THRESHOLD = 5000  # generation-0 threshold: above what requests in flight hold (see above)
SLOW_COLLECTION_S = 0.005  # a scheduled collection longer than this is logged


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


class CollectorSchedule:
    """Full collections off the request path: automatic generation-2 collections off while started; one
    scheduled every `period_s` on the event loop instead; young ones at YOUNG_THRESHOLD. stop() restores the
    thresholds it found."""

    def __init__(self, period_s: float = FULL_COLLECTION_S) -> None:
        self.period_s = period_s
        self._saved: tuple[int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        _young, middle, _old = self._saved = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, middle, NEVER)
        self._timer = asyncio.get_running_loop().call_later(self.period_s, self._collect)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def _collect(self) -> None:
        started = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - started
        if took > SLOW_COLLECTION_S:
            log.info("scheduled full collection: %.1f ms, %d unreachable objects", took * 1000, found)
        self._timer = asyncio.get_running_loop().call_later(self.period_s, self._collect)

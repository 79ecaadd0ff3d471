"""`--chunk-rows auto`: choose C per model from timings of its forward pass on the serving device, at load.

Padding costs a lone request the compute of C rows; a larger C serves more rows per second once requests
share chunks. The rule: among C in 1, 2, 4, ..., 256, the C with the highest rows/s whose single-chunk
latency stays within a bound (`--chunk-latency-bound-ms`); when none does, the fastest single chunk. The
choice is part of what the guarantee is relative to, so it and its timings go into the model's metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine.types import Executor, Float32Array

CANDIDATE_CHUNK_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
WARMUP_RUNS = 3
TIMED_RUNS = 20  # the best of these counts: other work on the machine only ever slows a run down
BUDGET_S = 0.25  # per candidate, so a slow model's large C costs at most this much load time


@dataclass(frozen=True)
class ChunkTiming:
    chunk_rows: int
    seconds: float  # one forward of a full C-row chunk (padding, forward, copies out), the best run

    @property
    def rows_per_second(self) -> float:
        return self.chunk_rows / self.seconds


@dataclass(frozen=True)
class Calibration:
    chunk_rows: int
    bound_ms: float
    timings: tuple[ChunkTiming, ...]

    def describe(self) -> dict[str, Any]:
        return {
            "chunk_rows_choice": "auto",
            "chunk_latency_bound_ms": self.bound_ms,
            "chunk_timings_ms": {str(t.chunk_rows): round(t.seconds * 1000, 4) for t in self.timings},
        }


def choose_chunk_rows(timings: tuple[ChunkTiming, ...], bound_s: float) -> int:
    """The C with the highest rows/s among those whose chunk latency is within the bound (ties: the smaller
    C); when none is within the bound, the C with the fastest chunk."""
    if not timings:
        raise ValueError("no chunk timings to choose from")
    within = [timing for timing in timings if timing.seconds <= bound_s]
    if not within:
        return min(timings, key=lambda timing: (timing.seconds, timing.chunk_rows)).chunk_rows
    return max(within, key=lambda timing: (timing.rows_per_second, -timing.chunk_rows)).chunk_rows


def calibrate(
    make_executor: Callable[[int], Executor],
    bound_ms: float,
    candidates: tuple[int, ...] = CANDIDATE_CHUNK_ROWS,
    clock: Callable[[], float] = time.perf_counter,
) -> Calibration:
    """Time a full chunk for each candidate C (ascending), each on its own executor, and choose.

    Candidates past the first whose chunk exceeds the bound are not timed: a larger chunk is not faster.
    """
    timings: list[ChunkTiming] = []
    for chunk_rows in sorted(candidates):
        timings.append(ChunkTiming(chunk_rows, best_chunk_seconds(make_executor(chunk_rows), clock)))
        if timings[-1].seconds > bound_ms / 1000:
            break
    return Calibration(choose_chunk_rows(tuple(timings), bound_ms / 1000), bound_ms, tuple(timings))


def choose_placement(setting: str, forward_s: float, loop_bound_ms: float) -> str:
    """Where a model's chunks run: "loop" when one C-row forward is shorter than `loop_bound_ms` (a thread
    hand-off per chunk would cost more than the forward), else "thread"; a setting other than auto wins."""
    if setting != "auto":
        return setting
    return "loop" if forward_s * 1000 <= loop_bound_ms else "thread"


def best_chunk_seconds(executor: Executor, clock: Callable[[], float] = time.perf_counter) -> float:
    shape = (executor.chunk_rows, *executor.input_shape)  # exactly one chunk
    rows: Float32Array = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(WARMUP_RUNS):
        executor.run(rows)
    best = float("inf")
    deadline = clock() + BUDGET_S
    for _ in range(TIMED_RUNS):
        started = clock()
        executor.run(rows)
        finished = clock()
        best = min(best, finished - started)
        if finished > deadline:
            break
    return best

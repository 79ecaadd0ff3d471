"""The loop placement of a Batcher (service/engine/batcher.py): chunks run on the event loop's thread itself.

For models whose C-row forward is shorter than a thread hand-off (calibration.py decides at load), the
rows of every request that arrived in one loop iteration share chunks, run by a turn scheduled after the
callbacks already due. A turn runs chunks for at most TURN_BUDGET_S (at least one), then yields, so that a
large request never holds the loop longer: other requests' callbacks run, then the next turn.

While the loop is busy (the last chunk held several requests), a turn whose chunk is not full waits one
loop iteration, once: the requests read in the last poll run behind it and submit before it runs again, so
a chunk holds two polls' requests instead of one. A C-row forward costs nearly the same for 5 rows as for
32 (digits MLP: 0.15 ms at 9-32 rows), and at 64 connections the forwards were 29 us of the loop per
request. A lone client's chunk never waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

log = logging.getLogger("invariant.batcher")
TURN_BUDGET_S = 0.002  # chunks one event-loop turn may run before it yields to other work


class LoopTurns:
    """Mixin of Batcher: the turns of the loop placement. The state and the chunk steps are the Batcher's."""

    _turn: asyncio.Handle | None
    _waited: bool  # this turn already waited one iteration for company
    _last_requests: int  # requests in the last chunk run
    max_queue_delay_s: float
    chunk_rows: int
    failure: str
    _queued_rows: int
    _stopping: bool
    _draining: bool
    _wakeup: threading.Condition
    _running: list[Any]
    _audits: deque[Any]
    _labels: tuple[str, str]

    def _take_chunk(self) -> list[Any]:
        raise NotImplementedError

    def _run_chunk(self, pieces: list[Any]) -> None:
        raise NotImplementedError

    def _audit_one(self) -> None:
        raise NotImplementedError

    def _fail(self, reason: str) -> None:
        raise NotImplementedError

    def _schedule_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run a turn after the callbacks already due, so requests that arrived in the same loop iteration
        share its chunks (or after max_queue_delay, if set, while the chunk is not full)."""
        delay = self.max_queue_delay_s if self._queued_rows < self.chunk_rows else 0.0
        self._turn = loop.call_later(delay, self._loop_turn) if delay > 0 else loop.call_soon(self._loop_turn)

    def _loop_turn(self) -> None:
        """Chunks for at most TURN_BUDGET_S (at least one), then yield; again while rows wait."""
        if not self._waited and self._last_requests > 1 and self._queued_rows < self.chunk_rows:
            self._waited = True  # busy and not full: behind the requests read in the last poll, once
            self._turn = asyncio.get_running_loop().call_soon(self._loop_turn)
            return
        self._waited = False
        self._turn = None
        try:
            deadline = time.perf_counter() + TURN_BUDGET_S
            while self._queued_rows and not self._stopping:
                with self._wakeup:
                    pieces = self._take_chunk()
                self._running = pieces
                self._last_requests = len(pieces)
                self._run_chunk(pieces)
                self._running = []
                if self._draining:
                    with self._wakeup:
                        self._wakeup.notify_all()
                if time.perf_counter() >= deadline:
                    break  # yield: other requests' callbacks run, then the next turn
            if self._audits and not self._queued_rows and not self._draining and not self._stopping:
                self._audit_one()  # one per turn, only when no request waits
        except Exception as exc:  # what would kill a compute thread: the model must say so
            self._fail(f"compute failed on the event loop: {type(exc).__name__}: {exc}")
            log.critical("model %s version %s: %s", *self._labels, self.failure, exc_info=exc)
            return
        if (self._queued_rows or self._audits) and not self._stopping and self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._loop_turn)

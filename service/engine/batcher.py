"""Dynamic batching onto the fixed-shape executor.

Requests for one model version queue up here; a compute thread fills each chunk of C rows fairly from the
waiting requests (each gets an equal share, a large request spans chunks, small ones share a chunk, so a
1-row request never waits behind a large one's thousands of rows), runs one fixed-shape forward, and
scatters each row's outputs back to the request that owns it. Rows are identified by (request, offset),
never by position in the chunk, so a result cannot reach another client.

Placement (decided per model at load, see `choose_placement`): "thread" runs chunks on the batcher's own
compute thread; "loop" runs them on the event loop's thread itself (loop_turns.py), for models whose C-row
forward is shorter than a thread hand-off. Both placements share the queue, the fair shares, the bounds,
timeouts, cancellation, audits and metrics.

If the compute thread (or a loop turn) dies for any reason, the batcher fails every waiting request at once,
refuses new ones, and reports the reason through `on_failure` (the registry then stops serving the model).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.engine.loop_turns import LoopTurns
from service.engine.types import Executor, Float32Array, Outputs, RequestTiming, all_finite
from service.errors import NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from service.observability.metrics import Metrics, observer

log = logging.getLogger("invariant.batcher")
AUDIT_BACKLOG = 256
PLACEMENTS = ("thread", "loop")


@dataclass(eq=False)
class _Request:
    rows: Float32Array  # (n, *input_shape)
    future: asyncio.Future[Outputs]
    loop: asyncio.AbstractEventLoop
    enqueued_at: float
    timing: RequestTiming | None = None  # filled in for the caller (access log), when it asks
    results: Outputs | None = None  # made by the first chunk that holds rows of it
    taken: int = 0  # rows handed to the compute thread so far
    finished: int = 0  # rows whose outputs are stored
    cancelled: bool = False

    @property
    def remaining(self) -> int:
        return self.rows.shape[0] - self.taken


@dataclass
class _Piece:
    request: _Request
    start: int
    stop: int


class Batcher(LoopTurns):
    def __init__(
        self,
        executor: Executor,
        labels: tuple[str, str],
        metrics: Metrics,
        max_queue_rows: int,
        max_queue_delay_s: float = 0.0,
        audit_fraction: float = 0.0,
        on_failure: Callable[[str], None] | None = None,
        placement: str = "thread",
    ) -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.placement = placement
        self._on_loop = placement == "loop"
        self._turn = None  # loop placement: the scheduled turn, if any (loop_turns.py)
        self._waited = False
        self._last_requests = 0
        self.executor = executor
        self.chunk_rows = executor.chunk_rows
        self.max_queue_rows = max_queue_rows
        self.max_queue_delay_s = max_queue_delay_s
        self.audit_fraction = audit_fraction
        self._metrics = metrics
        self._labels = labels
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._audits: deque[tuple[Float32Array, Outputs]] = deque(maxlen=AUDIT_BACKLOG)
        self._random = random.Random(0)
        self._wakeup = threading.Condition()
        self._stopping = False
        self._draining = False  # stop once the queue is empty (the version is being unloaded)
        self._on_failure = on_failure
        self.failure = ""  # why the compute thread died; "" while it runs
        self._running: list[_Piece] = []  # the chunk being computed, failed too if the thread dies in it
        # Children created up front so the audit series read 0, not absent, before the first audit.
        metrics.audit_checks.labels(*labels)
        metrics.audit_mismatches.labels(*labels)
        self._thread = threading.Thread(target=self._compute_loop, name=f"batcher-{labels[0]}", daemon=True)
        # Children resolved once: labels() costs a lock and a dict lookup per call.
        self._queue_gauge = metrics.queue_rows.labels(*labels)
        self._compute_seconds = observer(metrics.compute_seconds.labels(*labels))
        self._chunk_rows_seen = observer(metrics.chunk_rows.labels(*labels))
        self._padding_seen = observer(metrics.padding_fraction.labels(*labels))
        self._queue_seconds = observer(metrics.queue_seconds.labels(*labels))

    def start(self) -> None:
        if not self._on_loop:
            self._thread.start()

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if not self._on_loop:
            self._thread.join(timeout=5)

    def drain_and_stop(self, timeout_s: float) -> bool:
        """Answer every queued request, then stop the compute thread; True when it stopped in time.

        The registry calls this after it stopped routing requests here, so the queue only shrinks.
        """
        with self._wakeup:
            self._draining = True
            self._wakeup.notify_all()
            if self._on_loop:  # the loop's turns empty the queue; they notify after every chunk
                return self._wakeup.wait_for(lambda: not self._queued_rows or bool(self.failure), timeout_s)
        self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def admit(self, count: int) -> None:
        """Raise what submit() would for `count` rows (413, 503) without them: used before decoding."""
        if self.failure:
            raise NotReady(f"model {self._labels[0]!r} version {self._labels[1]} is not served: {self.failure}")
        if count > self.max_queue_rows:  # could never be queued: retrying would not help, unlike a full queue
            raise PayloadTooLarge(f"request has {count} rows, more than max_queue_rows={self.max_queue_rows}")
        if self._queued_rows + count > self.max_queue_rows:
            raise Overloaded(f"queue full: {self._queued_rows} rows waiting (max_queue_rows={self.max_queue_rows})")

    async def submit(self, rows: Float32Array, timeout_s: float, timing: RequestTiming | None = None) -> Outputs:
        """Queue rows (n, *input_shape); resolves with their outputs, or raises Overloaded/RequestTimeout.
        `timing`, when given, receives the request's queue and compute seconds."""
        loop = asyncio.get_running_loop()
        count = rows.shape[0]
        request = _Request(rows, loop.create_future(), loop, time.perf_counter(), timing)
        with self._wakeup:
            if self._draining or self._stopping:
                raise NotReady("this model version is being unloaded; retry to reach the version now served")
            self.admit(count)
            self._queue.append(request)
            self._set_queued(self._queued_rows + count)
            if not self._on_loop:  # only the compute thread waits for rows
                self._wakeup.notify()
        if self._on_loop and self._turn is None:
            self._schedule_turn(loop)
        # One timer on the request's own future instead of wait_for(shield(...)): no extra task or future.
        timer = loop.call_later(timeout_s, self._expire, request, timeout_s)
        try:
            return await request.future
        except asyncio.CancelledError:  # the client went away: free its rows
            self._cancel(request)
            raise
        finally:
            timer.cancel()

    def _expire(self, request: _Request, timeout_s: float) -> None:
        if request.future.done():
            return
        self._cancel(request)
        request.future.set_exception(
            RequestTimeout(f"no answer within {timeout_s:g} s; the request's rows were dropped")
        )

    def _cancel(self, request: _Request) -> None:
        with self._wakeup:
            if not request.cancelled:
                request.cancelled = True
                self._set_queued(self._queued_rows - request.remaining)

    def _set_queued(self, rows: int) -> None:
        self._queued_rows = rows
        self._queue_gauge.set(rows)

    def _compute_loop(self) -> None:
        try:
            self._serve_chunks()
        except BaseException as exc:  # whatever ends the thread (a bug, MemoryError), the model must say so
            self._fail(f"compute thread died: {type(exc).__name__}: {exc}")
            log.critical("model %s version %s: %s", *self._labels, self.failure, exc_info=exc)

    def _fail(self, reason: str) -> None:
        """Fail every waiting request now (503 rather than a 504 much later), refuse new ones, report."""
        with self._wakeup:
            self.failure = reason
            waiting = list(self._queue) + [piece.request for piece in self._running]
            self._queue = deque()
            self._set_queued(0)
        self._metrics.compute_failures.labels(*self._labels).inc()
        error = NotReady(f"model {self._labels[0]!r} version {self._labels[1]} is not served: {reason}")
        for request in waiting:
            self._resolve(request, error)
        if self._on_failure is not None:
            self._on_failure(reason)

    def _serve_chunks(self) -> None:
        while True:
            pieces = self._next_chunk()
            if pieces is None:
                return
            if pieces:
                self._running = pieces
                self._run_chunk(pieces)
                self._running = []
            if self._audits and (not self._queued_rows or len(self._audits) >= AUDIT_BACKLOG // 2):
                self._audit_one()

    def _next_chunk(self) -> list[_Piece] | None:
        """Up to C rows shared fairly by the waiting requests; [] when only audits are due; None when stopping."""
        with self._wakeup:
            while not self._queued_rows and not self._audits and not self._stopping and not self._draining:
                self._wakeup.wait()
            if self._stopping or (self._draining and not self._queued_rows):
                return None  # a draining batcher skips pending audits: the version is going away
            self._wait_for_fuller_chunk()
            return self._take_chunk()

    def _take_chunk(self) -> list[_Piece]:
        """Under the lock: the next chunk's pieces, shared fairly by the requests at the head of the queue."""
        waiting = self._take_waiting()
        try:
            return self._share(waiting)
        except BaseException:
            # Back where _fail finds them, so they get its 503 now rather than a 504 at their timeout.
            self._queue.extendleft(reversed(waiting))
            raise

    def _share(self, waiting: list[_Request]) -> list[_Piece]:
        """The next chunk's pieces from the requests taken off the queue; requeues those with rows left."""
        shares = fair_shares([request.remaining for request in waiting], self.chunk_rows)
        pieces: list[_Piece] = []
        for request, take in zip(waiting, shares, strict=True):
            if take:
                pieces.append(_Piece(request, request.taken, request.taken + take))
                request.taken += take
        # Round-robin: requests that got no rows keep their place at the head; those that still have rows
        # after this chunk go to the back.
        self._queue.extendleft(reversed([r for r, take in zip(waiting, shares, strict=True) if not take]))
        self._queue.extend(r for r, take in zip(waiting, shares, strict=True) if take and r.remaining)
        self._set_queued(self._queued_rows - sum(shares))
        return pieces

    def _take_waiting(self) -> list[_Request]:
        """Up to C live requests from the head of the queue (at most C can share a chunk); drops dead ones."""
        waiting: list[_Request] = []
        while self._queue and len(waiting) < self.chunk_rows:
            request = self._queue.popleft()
            if not request.cancelled and request.remaining:
                waiting.append(request)
        return waiting

    def _wait_for_fuller_chunk(self) -> None:
        # Opt-in: a lone request waits up to max_queue_delay for company; 0 (default) never waits.
        if self.max_queue_delay_s <= 0 or not self._queue:
            return
        deadline = self._queue[0].enqueued_at + self.max_queue_delay_s
        while self._queued_rows < self.chunk_rows and not self._stopping:
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            self._wakeup.wait(left)

    def _run_chunk(self, pieces: list[_Piece]) -> None:
        started = time.perf_counter()
        rows = np.concatenate([p.request.rows[p.start : p.stop] for p in pieces])  # (k <= C, *input_shape)
        try:
            outputs = self.executor.run(rows)
        except Exception as exc:  # a model error fails its requests, never the compute thread
            log.exception("chunk failed")
            for piece in pieces:
                self._resolve(piece.request, exc)
            return
        finished = time.perf_counter()
        self._record_chunk(pieces, rows.shape[0], started, finished)
        finite = all_finite(outputs.logits)  # once per chunk, not once per request (the data plane's 422 check)
        offset = 0
        for piece in pieces:
            self._scatter(piece, outputs, offset, finite)
            offset += piece.stop - piece.start

    def _scatter(self, piece: _Piece, outputs: Outputs, offset: int, finite: bool) -> None:
        request, count = piece.request, piece.stop - piece.start
        source = slice(offset, offset + count)
        if count == request.rows.shape[0]:  # the whole request in this chunk (the usual case): no copy, its
            # rows of the chunk's outputs, which are the batcher's own (Executor.run returns fresh arrays)
            target = Outputs(outputs.logits[source], outputs.probabilities[source], outputs.class_index[source], finite)
        else:
            target = request.results or _empty_outputs(request.rows.shape[0], self)
            target.logits[piece.start : piece.stop] = outputs.logits[source]
            target.probabilities[piece.start : piece.stop] = outputs.probabilities[source]
            target.class_index[piece.start : piece.stop] = outputs.class_index[source]
        request.results = target
        request.finished += count
        if request.finished == request.rows.shape[0]:
            self._resolve(request, target)
            self._sample_for_audit(request, target)

    def _record_chunk(self, pieces: list[_Piece], rows: int, started: float, finished: float) -> None:
        self._compute_seconds(finished - started)
        self._chunk_rows_seen(rows)
        self._padding_seen(1 - rows / self.chunk_rows)
        for piece in pieces:
            timing = piece.request.timing
            if piece.start == 0:
                self._queue_seconds(started - piece.request.enqueued_at)
                if timing is not None:
                    timing.queue_s = started - piece.request.enqueued_at
            if timing is not None:
                timing.compute_s += finished - started

    def _resolve(self, request: _Request, result: Outputs | BaseException) -> None:
        if self._on_loop:  # already on the request's loop: no hand-off
            _settle(request, result)
        else:
            request.loop.call_soon_threadsafe(_settle, request, result)

    def _sample_for_audit(self, request: _Request, served: Outputs) -> None:
        if self.audit_fraction <= 0:
            return
        for index in range(request.rows.shape[0]):
            if self._random.random() < self.audit_fraction:
                self._audits.append((request.rows[index : index + 1].copy(), served.row(index)))

    def _audit_one(self) -> None:
        """Re-run one served row alone (padded to C like every forward) and compare its bits."""
        row, served = self._audits.popleft()
        alone = self.executor.run(row)
        self._metrics.audit_checks.labels(*self._labels).inc()
        if not alone.bitwise_equal(served):
            self._metrics.audit_mismatches.labels(*self._labels).inc()
            log.error("AUDIT MISMATCH model=%s version=%s: a served row differs from the row alone", *self._labels)


def fair_shares(remaining: list[int], free: int) -> list[int]:
    """Rows each request gets in a chunk of `free` rows: equal shares (in queue order when they do not
    divide), a request needing less than its share leaves the rest to the others. Sums to min(free, total)."""
    if sum(remaining) <= free:  # everyone fits (small requests, the usual chunk): each gets all its rows
        return list(remaining)
    shares = [0] * len(remaining)
    hungry = [i for i, rows in enumerate(remaining) if rows]
    while free and hungry:
        share = max(1, free // len(hungry))
        for i in hungry:
            give = min(share, remaining[i] - shares[i], free)
            shares[i] += give
            free -= give
            if not free:
                break
        hungry = [i for i in hungry if shares[i] < remaining[i]]
    return shares


def _empty_outputs(count: int, batcher: Batcher) -> Outputs:
    classes = batcher.executor.num_classes
    return Outputs(
        np.empty((count, classes), dtype=np.float32),
        np.empty((count, classes), dtype=np.float32),
        np.empty((count,), dtype=np.int64),
    )


def _settle(request: _Request, result: Outputs | BaseException) -> None:
    if request.future.done():
        return  # timed out meanwhile
    if isinstance(result, BaseException):
        request.future.set_exception(result)
    else:
        request.future.set_result(result)

"""The dynamic batcher in process: chunk assembly, scatter by request identity, queue bound, timeouts.

A model that blocks inside its forward pass holds the compute thread, so queue states are deterministic.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import service.engine.batcher
from service.engine.batcher import Batcher, fair_shares
from service.engine.executor import EagerExecutor
from service.errors import NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from service.observability.metrics import Metrics


class GatedModel(nn.Module):
    """Returns the first two features; each forward of a request's rows waits for the gate and records its
    chunk. All-zero chunks pass straight through: they are the executor's per-thread warm-up forwards (every
    test row has a non-zero feature)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.chunks: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.any():
            return x[:, :2] * 1.0
        self.entered.release()
        assert self.gate.wait(timeout=10)
        self.chunks.append(x.clone())
        return x[:, :2] * 1.0


def gated_batcher(max_queue_rows: int, **options: Any) -> tuple[GatedModel, Batcher]:
    model = GatedModel()
    # Not traced: a trace would record the tensor ops only, not the gate.
    executor = EagerExecutor(model, (4,), 2, chunk_rows=4)
    batcher = Batcher(executor, ("gated", "1"), Metrics(4), max_queue_rows=max_queue_rows, **options)
    batcher.start()
    return model, batcher


@pytest.fixture
def gated() -> Iterator[tuple[GatedModel, Batcher]]:
    model, batcher = gated_batcher(10)
    yield model, batcher
    model.gate.set()
    batcher.stop()


def rows(start: int, count: int) -> np.ndarray:
    """Distinct rows: row i is [i, -i, 0, 0], so the outputs name the row they came from."""
    values = np.arange(start, start + count, dtype=np.float32)
    return np.stack([values, -values, 0 * values, 0 * values], axis=1)


def test_requests_share_chunks_and_get_their_own_rows_back(gated: tuple[GatedModel, Batcher]) -> None:
    model, batcher = gated

    async def scenario() -> list[np.ndarray]:
        first = asyncio.create_task(batcher.submit(rows(100, 1), 5))
        await asyncio.to_thread(model.entered.acquire)  # compute thread is busy with request 100
        others = [asyncio.create_task(batcher.submit(rows(200 + 10 * i, 3), 5)) for i in range(3)]
        await asyncio.sleep(0)  # one loop turn: the three tasks queue their rows (no await before that)
        assert batcher.queued_rows == 9
        model.gate.set()
        results = await asyncio.gather(first, *others)
        return [result.logits for result in results]

    logits = asyncio.run(scenario())
    assert logits[0].tolist() == [[100.0, -100.0]]
    for i, got in enumerate(logits[1:]):
        assert got.tolist() == rows(200 + 10 * i, 3)[:, :2].tolist()
    # Every forward ran on exactly C = 4 rows; 1 + 9 rows -> chunks of 1 | 4 | 4 | 1 (a request spans chunks),
    # each chunk shared fairly: one row per waiting request, the rest in queue order.
    assert [tuple(chunk.shape) for chunk in model.chunks] == [(4, 4)] * 4
    assert [int((chunk[:, 0] != 0).sum()) for chunk in model.chunks] == [1, 4, 4, 1]
    assert model.chunks[1][:, 0].tolist() == [200.0, 201.0, 210.0, 220.0]
    assert model.chunks[2][:, 0].tolist() == [202.0, 211.0, 212.0, 221.0]
    assert model.chunks[3][:, 0].tolist() == [222.0, 0.0, 0.0, 0.0]


def test_full_queue_answers_overloaded_and_recovers(gated: tuple[GatedModel, Batcher]) -> None:
    model, batcher = gated

    async def scenario() -> None:
        busy = asyncio.create_task(batcher.submit(rows(1, 4), 5))
        await asyncio.to_thread(model.entered.acquire)
        queued = asyncio.create_task(batcher.submit(rows(10, 8), 5))  # 8 of max 10 rows waiting
        await asyncio.sleep(0)  # one loop turn: the task queues its rows
        assert batcher.queued_rows == 8
        with pytest.raises(Overloaded, match=r"queue full: 8 rows waiting \(max_queue_rows=10\)") as refused:
            await batcher.submit(rows(20, 3), 5)
        assert refused.value.headers == {"Retry-After": "1"}
        assert batcher.queued_rows == 8  # the refused request left nothing behind
        model.gate.set()
        assert (await busy).logits[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0]
        assert (await queued).logits[:, 0].tolist() == list(map(float, range(10, 18)))
        assert (await batcher.submit(rows(30, 3), 5)).logits[:, 0].tolist() == [30.0, 31.0, 32.0]

    asyncio.run(scenario())
    assert batcher.queued_rows == 0


def test_timeout_frees_the_rows_and_the_batcher_recovers(gated: tuple[GatedModel, Batcher]) -> None:
    model, batcher = gated

    async def scenario() -> None:
        busy = asyncio.create_task(batcher.submit(rows(1, 4), 5))
        await asyncio.to_thread(model.entered.acquire)
        with pytest.raises(RequestTimeout, match=r"no answer within 0.05 s"):
            await batcher.submit(rows(50, 6), 0.05)
        assert batcher.queued_rows == 0  # the timed-out request's rows were dropped, not left queued
        model.gate.set()
        await busy
        assert (await batcher.submit(rows(60, 2), 5)).logits[:, 0].tolist() == [60.0, 61.0]

    asyncio.run(scenario())
    computed = [row for chunk in model.chunks for row in chunk[:, 0].tolist() if row]
    assert 50.0 not in computed  # the dropped rows never ran


def test_request_larger_than_the_queue_bound_is_refused_as_too_large(gated: tuple[GatedModel, Batcher]) -> None:
    model, batcher = gated
    model.gate.set()

    async def scenario() -> None:
        with pytest.raises(PayloadTooLarge, match=r"request has 11 rows, more than max_queue_rows=10"):
            await batcher.submit(rows(1, 11), 5)
        assert (await batcher.submit(rows(1, 10), 5)).logits[:, 0].tolist() == list(map(float, range(1, 11)))

    asyncio.run(scenario())
    assert batcher.queued_rows == 0


def test_drain_answers_queued_and_computing_requests_then_stops(gated: tuple[GatedModel, Batcher]) -> None:
    """What an unloaded version does: requests it already holds finish on it, new ones are turned away."""
    model, batcher = gated

    async def scenario() -> tuple[list[np.ndarray], bool, bool, str]:
        computing = asyncio.create_task(batcher.submit(rows(100, 1), 5))
        await asyncio.to_thread(model.entered.acquire)  # the compute thread holds request 100
        queued = [asyncio.create_task(batcher.submit(rows(200 + 10 * i, 3), 5)) for i in range(2)]
        await asyncio.sleep(0)  # both enqueued
        stopped_while_gated = batcher.drain_and_stop(0)  # draining starts; the gate holds the thread
        try:
            await batcher.submit(rows(300, 1), 5)
            refusal = ""
        except NotReady as exc:
            refusal = exc.message
        model.gate.set()
        results = await asyncio.gather(computing, *queued)
        stopped = await asyncio.to_thread(batcher.drain_and_stop, 10)
        return [result.logits for result in results], stopped_while_gated, stopped, refusal

    logits, stopped_while_gated, stopped, refusal = asyncio.run(scenario())
    assert stopped_while_gated is False
    assert logits[0].tolist() == [[100.0, -100.0]]
    assert logits[1].tolist() == rows(200, 3)[:, :2].tolist()
    assert logits[2].tolist() == rows(210, 3)[:, :2].tolist()
    assert stopped is True
    assert refusal == "this model version is being unloaded; retry to reach the version now served"


# ------------------------------------------------------------------------- fairness (issue 11, defect 5)


def test_fair_shares_split_a_chunk_equally_and_give_leftovers_in_queue_order() -> None:
    assert fair_shares([8192, 8192, 8192, 8192, 1], 32) == [8, 8, 8, 7, 1]
    assert fair_shares([1, 2, 3], 32) == [1, 2, 3]
    assert fair_shares([100, 3], 32) == [29, 3]
    assert fair_shares([5, 5, 5], 2) == [1, 1, 0]
    assert fair_shares([], 4) == []


def test_a_small_request_runs_in_the_next_chunk_beside_a_large_one() -> None:
    model, batcher = gated_batcher(100)

    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        first = asyncio.create_task(batcher.submit(rows(1, 1), 5))
        await asyncio.to_thread(model.entered.acquire)  # compute thread holds request 1
        large = asyncio.create_task(batcher.submit(rows(100, 16), 5))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(batcher.submit(rows(900, 1), 5))
        await asyncio.sleep(0.01)
        model.gate.set()
        await first
        return (await large).logits, (await small).logits

    try:
        large, small = asyncio.run(scenario())
    finally:
        model.gate.set()
        batcher.stop()
    assert large.tolist() == rows(100, 16)[:, :2].tolist()
    assert small.tolist() == [[900.0, -900.0]]
    assert [tuple(chunk.shape) for chunk in model.chunks] == [(4, 4)] * 6  # 1 | 3+1 | 4 | 4 | 4 | 1
    # Strictly first-in-first-out, row 900 would wait for all 16 rows of the large request (chunk 5).
    assert model.chunks[1][:, 0].tolist() == [100.0, 101.0, 102.0, 900.0]


def test_chunks_go_round_robin_when_more_requests_wait_than_a_chunk_holds() -> None:
    model, batcher = gated_batcher(100)

    async def scenario() -> list[np.ndarray]:
        first = asyncio.create_task(batcher.submit(rows(1, 1), 5))
        await asyncio.to_thread(model.entered.acquire)
        waiting = []
        for index in range(6):  # requests A..F of 3 rows each: rows 100.., 200.., ..., 600..
            waiting.append(asyncio.create_task(batcher.submit(rows(100 * (index + 1), 3), 5)))
            await asyncio.sleep(0.005)
        model.gate.set()
        await first
        return [(await task).logits for task in waiting]

    try:
        answers = asyncio.run(scenario())
    finally:
        model.gate.set()
        batcher.stop()
    for index, logits in enumerate(answers):
        assert logits.tolist() == rows(100 * (index + 1), 3)[:, :2].tolist()
    # At most C = 4 requests share a chunk; E and F, left out of the first, lead the second.
    assert model.chunks[1][:, 0].tolist() == [100.0, 200.0, 300.0, 400.0]
    assert model.chunks[2][:, 0].tolist() == [500.0, 600.0, 101.0, 201.0]
    assert model.chunks[3][:, 0].tolist() == [301.0, 401.0, 501.0, 601.0]


# ------------------------------------------------------------- a compute thread that dies (defect 3)


def test_a_dead_compute_thread_fails_waiting_requests_reports_and_refuses_new_ones() -> None:
    failures: list[str] = []
    # An infinite fill wait is what `--max-queue-delay-ms inf` once gave it: OverflowError in Condition.wait.
    model, batcher = gated_batcher(100, max_queue_delay_s=float("inf"), on_failure=failures.append)
    model.gate.set()
    reason = "compute thread died: OverflowError: timestamp out of range for platform time_t"

    async def scenario() -> None:
        with pytest.raises(NotReady) as answer:
            await batcher.submit(rows(1, 2), 5)  # 503 at once, not a 504 after the timeout
        assert answer.value.message == f"model 'gated' version 1 is not served: {reason}"
        with pytest.raises(NotReady):
            await batcher.submit(rows(1, 2), 5)

    try:
        asyncio.run(scenario())
    finally:
        batcher.stop()
    assert failures == [reason]
    assert batcher.failure == reason
    assert batcher.queued_rows == 0
    metrics_text = batcher._metrics.render().decode()
    assert 'invariant_compute_thread_failures_total{model="gated",version="1"} 1.0' in metrics_text


def test_requests_taken_off_the_queue_when_the_thread_dies_get_the_503_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread dies after taking the waiting requests for a chunk and before they are in it: they are
    answered with the reason now, not with a 504 at their timeout (found end to end, tests/test_faults.py)."""

    def broken_fair_shares(_remaining: list[int], _free: int) -> list[int]:
        raise RuntimeError("broken share")

    monkeypatch.setattr(service.engine.batcher, "fair_shares", broken_fair_shares)
    model, batcher = gated_batcher(100)
    model.gate.set()
    reason = "compute thread died: RuntimeError: broken share"

    async def scenario() -> None:
        with pytest.raises(NotReady, match=f"model 'gated' version 1 is not served: {reason}"):
            await batcher.submit(rows(1, 2), 60)  # a lost request would wait out these 60 s, then 504

    try:
        asyncio.run(asyncio.wait_for(scenario(), 10))
    finally:
        batcher.stop()
    assert batcher.failure == reason

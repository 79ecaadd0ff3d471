"""The dynamic batcher in process: chunk assembly, scatter by request identity, queue bound, timeouts.

A model that blocks inside its forward pass holds the compute thread, so queue states are deterministic.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from service.batcher import Batcher
from service.errors import NotReady, Overloaded, PayloadTooLarge, RequestTimeout
from service.executor import EagerExecutor
from service.metrics import Metrics


class GatedModel(nn.Module):
    """Returns the first two features; each forward waits for the gate and records its chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.chunks: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.release()
        assert self.gate.wait(timeout=10)
        self.chunks.append(x.clone())
        return x[:, :2] * 1.0


@pytest.fixture
def gated() -> Iterator[tuple[GatedModel, Batcher]]:
    model = GatedModel()
    # Not traced: a trace would record the tensor ops only, not the gate.
    executor = EagerExecutor(model, (4,), 2, chunk_rows=4)
    batcher = Batcher(executor, ("gated", "1"), Metrics(4), max_queue_rows=10, audit_fraction=0.0)
    batcher.start()
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
    # Every forward ran on exactly C = 4 rows; 1 + 9 rows -> chunks of 1 | 4 | 4 | 1 (a request spans chunks).
    assert [tuple(chunk.shape) for chunk in model.chunks] == [(4, 4)] * 4
    assert [int((chunk[:, 0] != 0).sum()) for chunk in model.chunks] == [1, 4, 4, 1]
    assert model.chunks[1][:, 0].tolist() == [200.0, 201.0, 202.0, 210.0]


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

"""The batcher's loop placement: chunks computed on the event loop's own thread, for models whose forward is
shorter than a thread hand-off. Same bits, same bounds, same fairness as the thread placement; a turn yields
between chunks once its budget is spent."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch
from torch import nn

import service.engine.loop_turns
from service.engine.batcher import Batcher
from service.engine.calibration import choose_placement
from service.engine.executor import EagerExecutor, TracedCpuExecutor
from service.errors import Overloaded
from service.guarantee.shape import prove_shape
from service.observability.metrics import Metrics

FEATURES = 8
CLASSES = 3


class Recorder(nn.Module):
    """A small MLP that records the thread of every forward and how many rows it saw with a non-zero row."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES))
        self.threads: list[int] = []
        self.chunk_rows_used: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        used = int(x.abs().sum(dim=1).gt(0).sum())
        if used:  # all-zero chunks are the executor's per-thread warm-up forwards
            self.threads.append(threading.get_ident())
            self.chunk_rows_used.append(used)
        return self.net(x)


def batcher_of(model: nn.Module, placement: str, max_queue_rows: int = 10_000) -> Batcher:
    executor = EagerExecutor(model.eval(), (FEATURES,), CLASSES, chunk_rows=4)
    batcher = Batcher(executor, ("m", "1"), Metrics(4), max_queue_rows, placement=placement)
    batcher.start()
    return batcher


def rows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 2.0, (count, FEATURES)).astype(np.float32)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def test_chunks_run_on_the_loop_thread_and_share_rows_of_one_turn(recorder: Recorder) -> None:
    batcher = batcher_of(recorder, "loop")

    async def scenario() -> list[np.ndarray]:
        requests = [rows(3, seed) for seed in range(3)]  # 9 rows in one loop turn: chunks of 4, 4, 1
        answers = await asyncio.gather(*(batcher.submit(r, 5) for r in requests))
        return [a.logits for a in answers]

    loop_thread: list[int] = []

    async def main() -> list[np.ndarray]:
        loop_thread.append(threading.get_ident())
        return await scenario()

    logits = asyncio.run(main())
    batcher.stop()
    assert set(recorder.threads) == set(loop_thread)  # no compute thread: the loop's own
    assert recorder.chunk_rows_used == [4, 4, 1]
    alone = [batcher.executor.run(rows(3, seed)).logits for seed in range(3)]
    for got, want in zip(logits, alone, strict=True):
        assert got.tobytes() == want.tobytes()


def test_loop_and_thread_placements_give_the_same_bits() -> None:
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, CLASSES)).eval()
    # The C this host's self-test proves, as a served model gets: on some CPUs (AVX-512 here) a row's bits at
    # C = 8 depend on its position in the chunk for this model, so the bits alone would differ there.
    proof = prove_shape(lambda c: TracedCpuExecutor(model, (FEATURES,), CLASSES, chunk_rows=c), 8, False, seed=0)
    assert proof.passed, proof.tried
    executor = proof.executor
    requests = [rows(count, seed) for seed, count in enumerate([1, 5, 13, 2, 8])]

    def served(placement: str) -> list[bytes]:
        batcher = Batcher(executor, ("m", "1"), Metrics(8), 10_000, placement=placement)
        batcher.start()

        async def scenario() -> list[bytes]:
            answers = await asyncio.gather(*(batcher.submit(r, 5) for r in requests))
            return [a.logits.tobytes() + a.probabilities.tobytes() + a.class_index.tobytes() for a in answers]

        try:
            return asyncio.run(scenario())
        finally:
            batcher.stop()

    on_loop, on_thread = served("loop"), served("thread")
    assert on_loop == on_thread
    alone = [executor.run(r) for r in requests]
    assert on_loop == [a.logits.tobytes() + a.probabilities.tobytes() + a.class_index.tobytes() for a in alone]


def test_a_turn_yields_to_other_callbacks_once_its_budget_is_spent(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service.engine.loop_turns, "TURN_BUDGET_S", 0.0)  # exactly one chunk per turn
    batcher = batcher_of(recorder, "loop")
    events: list[str] = []

    async def scenario() -> None:
        large = asyncio.ensure_future(batcher.submit(rows(12, 1), 5))  # 3 chunks of 4
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # the request is queued and its first turn scheduled

        def tick() -> None:
            events.append(f"tick after {len(recorder.chunk_rows_used)} chunks")

        loop.call_soon(tick)
        await large
        events.append(f"answered after {len(recorder.chunk_rows_used)} chunks")

    asyncio.run(scenario())
    batcher.stop()
    assert events == ["tick after 1 chunks", "answered after 3 chunks"]


def test_the_queue_bound_and_cancellation_hold_on_the_loop(recorder: Recorder) -> None:
    batcher = batcher_of(recorder, "loop", max_queue_rows=6)

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(rows(4, 1), 5))
        await asyncio.sleep(0)  # queued, not computed yet: the turn runs after this callback
        with pytest.raises(Overloaded):
            await batcher.submit(rows(4, 2), 5)
        assert (await first).logits.shape == (4, CLASSES)
        # A client that leaves: its rows are computed in the next loop turn at the latest (nothing can run
        # between its enqueue and that turn), the answer is dropped, and the queue is empty again.
        second = asyncio.ensure_future(batcher.submit(rows(2, 3), 5))
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert batcher.queued_rows == 0
        assert (await batcher.submit(rows(6, 4), 5)).logits.shape == (6, CLASSES)  # the whole bound is free

    asyncio.run(scenario())
    batcher.stop()
    assert recorder.chunk_rows_used == [4, 2, 4, 2]


def test_drain_from_another_thread_waits_for_the_loop_to_answer_the_queue(recorder: Recorder) -> None:
    batcher = batcher_of(recorder, "loop")

    async def scenario() -> tuple[bool, int]:
        pending = [asyncio.ensure_future(batcher.submit(rows(4, seed), 5)) for seed in range(5)]
        await asyncio.sleep(0)
        drained = await asyncio.to_thread(batcher.drain_and_stop, 5.0)
        answered = len(await asyncio.gather(*pending))
        return drained, answered

    assert asyncio.run(scenario()) == (True, 5)


@pytest.mark.parametrize(
    ("setting", "forward_ms", "bound_ms", "placement"),
    [
        ("auto", 0.1, 0.5, "loop"),
        ("auto", 0.5, 0.5, "loop"),
        ("auto", 0.6, 0.5, "thread"),
        ("thread", 0.1, 0.5, "thread"),
        ("loop", 9.0, 0.5, "loop"),
    ],
)
def test_placement_follows_the_measured_forward_unless_set(
    setting: str, forward_ms: float, bound_ms: float, placement: str
) -> None:
    assert choose_placement(setting, forward_ms / 1000, bound_ms) == placement


def test_a_busy_turn_waits_one_iteration_for_the_next_arrivals_and_a_lone_request_never_waits(
    recorder: Recorder,
) -> None:
    batcher = batcher_of(recorder, "loop")  # C = 4

    async def one_iteration_later(request: np.ndarray) -> object:
        await asyncio.sleep(0)  # submitted in the next loop iteration, as a request read in the next poll
        return await batcher.submit(request, 5)

    async def scenario() -> None:
        await batcher.submit(rows(1, 0), 5)  # alone: its turn runs at once
        await asyncio.gather(batcher.submit(rows(1, 1), 5), batcher.submit(rows(1, 2), 5))  # one chunk of 2
        # The last chunk held two requests: this turn waits one iteration, once, and takes the late one too.
        await asyncio.gather(batcher.submit(rows(1, 3), 5), one_iteration_later(rows(1, 4)))
        await batcher.submit(rows(1, 5), 5)  # the wait is once per turn: a lone request after it is answered

    asyncio.run(asyncio.wait_for(scenario(), 30))
    batcher.stop()
    assert recorder.chunk_rows_used == [1, 2, 2, 1]

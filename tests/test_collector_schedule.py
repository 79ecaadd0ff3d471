"""Full garbage collections off the request path: automatic generation-2 collections are off while the
schedule runs, a scheduled one runs on the event loop, young ones wait for YOUNG_THRESHOLD, and stop()
restores the thresholds it found."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from service.lifecycle.memory import NEVER, YOUNG_THRESHOLD, CollectorSchedule


def test_the_schedule_turns_automatic_full_collections_off_and_runs_its_own() -> None:
    before = gc.get_threshold()
    full_collections: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full_collections.append(1)

    async def scenario() -> tuple[tuple[int, int, int], int]:
        schedule = CollectorSchedule(period_s=0.01)
        schedule.start()
        during = gc.get_threshold()
        gc.callbacks.append(on_gc)
        try:
            while len(full_collections) < 2:  # the schedule re-arms itself after each collection
                await asyncio.sleep(0.005)
        finally:
            gc.callbacks.remove(on_gc)
            schedule.stop()
        return during, len(full_collections)

    during, collections = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert during == (YOUNG_THRESHOLD, before[1], NEVER)
    assert collections >= 2
    assert gc.get_threshold() == before


def test_cyclic_garbage_is_still_collected_young_once_it_passes_the_threshold() -> None:
    young_collections: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 0:
            young_collections.append(info["collected"])

    async def scenario() -> None:
        schedule = CollectorSchedule(period_s=3600)  # no scheduled collection during the test
        schedule.start()
        gc.callbacks.append(on_gc)
        try:
            for _ in range(YOUNG_THRESHOLD // 4):  # two tracked objects a cycle: past 700, below the threshold
                pair: list[Any] = [[]]
                pair[0].append(pair)
            assert young_collections == []  # counted, not collected yet (nothing else allocates here)
            for _ in range(YOUNG_THRESHOLD):
                pair = [[]]
                pair[0].append(pair)
        finally:
            gc.callbacks.remove(on_gc)
            schedule.stop()

    gc.collect()  # start from an empty generation 0
    asyncio.run(scenario())
    assert young_collections
    assert sum(young_collections) >= YOUNG_THRESHOLD

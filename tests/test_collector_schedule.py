"""Full garbage collections off the request path: automatic generation-2 collections are off while the
schedule runs, a scheduled one runs on the event loop, and stop() restores the thresholds it found."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from service.lifecycle.memory import NEVER, CollectorSchedule


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
    assert during == (before[0], before[1], NEVER)
    assert collections >= 2
    assert gc.get_threshold() == before

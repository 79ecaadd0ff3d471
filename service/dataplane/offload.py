"""The one offload policy: which work runs beside the event loop instead of on it.

Parsing or decoding a large body, or encoding thousands of rows, holds the loop (orjson keeps the GIL;
8 MiB takes ~0.3 s; ~20 ms per 1,000 answer rows), and every other client's small request waits behind it.
Small work stays on the loop: a thread hop costs more than it saves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

OFFLOAD_BYTES = 256 * 1024  # bodies at least this large are decompressed, parsed and decoded beside the loop
OFFLOAD_ROWS = 1024  # answers of at least this many rows are encoded beside the loop

P = ParamSpec("P")
T = TypeVar("T")


async def beside_loop_if(large: bool, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """work(*args) on a worker thread when `large`, else right here on the loop."""
    if large:
        return await asyncio.to_thread(work, *args, **kwargs)
    return work(*args, **kwargs)

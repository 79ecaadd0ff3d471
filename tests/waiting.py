"""The one wait-until of the test-suite: poll a condition, bounded in time, failing with what was awaited.

The deadline only bounds a broken server or process; a working one meets the condition within a poll or two.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T | bool | None], timeout_s: float = 60.0, every_s: float = 0.05) -> T:
    """Poll `probe` until it returns something other than None or False; returns it, or raises AssertionError
    naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result is not None and result is not False:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(every_s)

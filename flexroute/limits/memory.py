"""In-process rate limits: a counter per key and minute. Exact within one process."""

from __future__ import annotations

import time
from collections.abc import Callable

from flexroute.limits.base import WINDOW_SECONDS, Verdict


class MemoryLimiter:
    """Fixed windows; a window's counters are dropped when the next window starts.

    ``hit`` never waits, so concurrent requests on one event loop are counted exactly.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._window = -1
        self._counts: dict[str, int] = {}

    def hit_now(self, key: str, limit: int) -> Verdict:
        window = int(self._clock() // WINDOW_SECONDS)
        if window != self._window:
            self._window, self._counts = window, {}
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        reset = (window + 1) * WINDOW_SECONDS
        return Verdict(count <= limit, limit, max(0, limit - count), reset)

    async def hit(self, key: str, limit: int) -> Verdict:
        return self.hit_now(key, limit)

    def statistics(self) -> dict[str, int]:
        return {"keys": len(self._counts)}

    async def aclose(self) -> None:
        return None

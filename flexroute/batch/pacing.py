"""When the next request of a batch may start: ``--rpm`` pacing and a global pause.

``--rpm N`` is a token bucket holding one token, refilled every ``60 / N`` seconds: starts are
spaced evenly, so no 60-second window holds more than N of them. A provider's 429 (or 5xx)
pauses *every* start until its ``Retry-After`` has passed, rather than each queued line
starting its own flex wait into the same wall: lines not yet started keep their whole
``start_within`` budget for when the pause ends.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

__all__ = ["Pacer", "backoff"]


class Pacer:
    def __init__(self, rpm: float | None, *, clock: Callable[[], float] = anyio.current_time):
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be above 0")
        self._interval = 0.0 if rpm is None else 60.0 / rpm
        self._clock = clock
        self._next = -float("inf")
        self._paused_until = -float("inf")
        self.pauses = 0
        self.paused_seconds = 0.0

    async def slot(self) -> None:
        """Wait until this caller may start one request."""
        while True:
            now = self._clock()
            if self._paused_until > now:
                await anyio.sleep(self._paused_until - now)
                continue
            at = max(self._next, now)
            self._next = at + self._interval
            if at > now:
                await anyio.sleep(at - now)
                if self._paused_until > self._clock():
                    continue  # a pause began while this caller waited for its slot
            return

    def pause(self, seconds: float) -> None:
        """Hold every start for ``seconds`` from now (a longer pause already set wins)."""
        until = self._clock() + seconds
        if until > self._paused_until:
            self.pauses += 1
            self.paused_seconds += until - max(self._paused_until, self._clock())
            self._paused_until = until


def backoff(attempt: int) -> float:
    """Seconds to pause after the ``attempt``-th retryable answer without ``Retry-After``:
    1, 2, 4, … capped at 30."""
    return float(min(30, 2**attempt))

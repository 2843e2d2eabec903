"""Which models refused to stream flexroute's flex attempts lately, remembered for an hour.

flexroute streams the flex attempt of a non-streaming client so it can see flex start. OpenAI
refuses streaming on some models to organisations it has not verified (HTTP 400, ``param:
"stream"``, ``code: "unsupported_value"``); the refusal is about the organisation and the
model, not the request, so it is remembered per (provider, model) and later flex attempts for
that model go unstreamed at once instead of paying a refused round trip first. An entry lapses
after ``ttl`` seconds (default an hour: an organisation that gets verified streams again
within the hour); at most ``max_entries`` are kept, the least recently refused dropped first.

Synchronous and small: it never waits. The clock is injectable (``clock=``, default
``time.monotonic``), so a test can step past the hour.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ModelStreaming", "StreamRefusals"]


class StreamRefusals:
    """(provider, model) pairs whose streamed flex attempt was refused, each until it lapses."""

    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= 0 or max_entries < 1:
            raise ValueError("StreamRefusals needs ttl > 0 and max_entries >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()  # the sync SDK wrapper runs its loop on its own thread

    def refused(self, provider: str, model: str) -> bool:
        """True while a refusal of streaming for ``model`` is remembered."""
        key = (provider, model)
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if self._clock() >= until:
                del self._until[key]
                return False
            return True

    def remember(self, provider: str, model: str) -> None:
        """Note that ``provider`` refused to stream ``model``; forget the oldest past the bound."""
        key = (provider, model)
        with self._lock:
            self._until.pop(key, None)
            self._until[key] = self._clock() + self.ttl
            while len(self._until) > self.max_entries:
                self._until.popitem(last=False)

    def model(self, provider: str, model: str) -> ModelStreaming:
        """This memory as seen by one request for ``model``."""
        return ModelStreaming(self, provider, model)

    def statistics(self) -> dict[str, int]:
        """How many refusals are remembered (lapsed ones included until next asked about)."""
        with self._lock:
            return {"remembered": len(self._until), "max_entries": self.max_entries}


@dataclass(frozen=True, slots=True)
class ModelStreaming:
    """Whether one model's flex attempts may stream, and the way to record a refusal."""

    memory: StreamRefusals
    provider: str
    model: str

    @property
    def allowed(self) -> bool:
        return not self.memory.refused(self.provider, self.model)

    def refuse(self) -> None:
        self.memory.remember(self.provider, self.model)

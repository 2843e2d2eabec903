"""Rate limits per flexroute key: requests per fixed one-minute window.

Two limiters share one interface: :class:`~flexroute.limits.memory.MemoryLimiter` (one process,
exact) and :class:`~flexroute.limits.redis.RedisLimiter` (shared by every replica through one
atomic Lua script). :func:`limiter_for` picks by ``FLEXROUTE_REDIS_URL``.

Windows are aligned to the minute (Unix time ``// 60``); ``reset`` is the Unix time the current
window ends, which is what ``x-ratelimit-reset-requests`` and ``Retry-After`` are made from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flexroute.config import Settings

__all__ = ["WINDOW_SECONDS", "Limiter", "Verdict", "limiter_for"]

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request counted against a key: admitted or not, and what is left."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix time (seconds) the window ends

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": str(self.reset),
        }


class Limiter(Protocol):
    async def hit(self, key: str, limit: int) -> Verdict:
        """Count one request for ``key`` in the current window; admitted if within ``limit``."""

    async def aclose(self) -> None: ...


def limiter_for(settings: Settings, on_fallback: Callable[[], None] | None = None) -> Limiter:
    """In-process limits unless ``FLEXROUTE_REDIS_URL`` is set."""
    from flexroute.limits.memory import MemoryLimiter

    if settings.redis_url is None:
        return MemoryLimiter()
    from flexroute.limits.redis import RedisLimiter

    return RedisLimiter(settings.redis_url, prefix=settings.redis_prefix, on_fallback=on_fallback)

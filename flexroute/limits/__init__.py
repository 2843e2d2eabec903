"""Rate limits per flexroute key: requests per fixed one-minute window.

Two limiters share one interface: :class:`~flexroute.limits.memory.MemoryLimiter` (one process,
exact) and :class:`~flexroute.limits.redis.RedisLimiter` (shared by every replica through one
atomic Lua script). :func:`limiter_for` picks by ``FLEXROUTE_REDIS_URL``.

Windows are aligned to the minute (Unix time ``// 60``); ``reset`` is the Unix time the current
window ends, which is what ``x-ratelimit-reset-requests`` and ``Retry-After`` are made from.
"""

from __future__ import annotations

from collections.abc import Callable

from flexroute.config import Settings
from flexroute.limits.base import WINDOW_SECONDS, Limiter, Verdict
from flexroute.limits.memory import MemoryLimiter

__all__ = ["WINDOW_SECONDS", "Limiter", "Verdict", "limiter_for"]


def limiter_for(settings: Settings, on_fallback: Callable[[], None] | None = None) -> Limiter:
    """In-process limits unless ``FLEXROUTE_REDIS_URL`` is set."""
    if settings.redis_url is None:
        return MemoryLimiter()
    from flexroute.limits.redis import RedisLimiter

    return RedisLimiter(settings.redis_url, prefix=settings.redis_prefix, on_fallback=on_fallback)

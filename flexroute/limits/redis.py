"""Rate limits shared by every replica through Redis.

One Lua script per request: it reads Redis's own clock (replicas need not agree on time),
increments the key's counter for the current minute and sets its expiry on first use. Redis
runs a script atomically, so N replicas admit exactly ``limit`` requests per window. The
client never retries a command (a retried INCR after a lost reply would count a request
twice); loading the script after ``NOSCRIPT`` is the one repeat, and it is safe because the
script did not run.

**Redis unreachable: fail over to in-process limits.** A Redis outage must not take the
gateway down (fail closed would turn it into a 503 for every organisation) nor lift limits
entirely (fail open). So while Redis is unreachable each replica enforces the same limits on
its own — at most ``replicas × limit`` per window — logs one warning, counts
``flexroute_ratelimit_fallback_total`` and tries Redis again after ``retry_after`` seconds.
Every Redis call is bounded by short socket timeouts and an overall deadline: never a hang.
Waiting for one of the pool's connections is local congestion, not an outage: a burst of
hundreds of requests on one replica queues for a connection (up to ``pool_timeout``) instead
of declaring Redis down and silently multiplying the limit by the number of replicas. For
the same reason the socket timeouts are 5 s, not less: a replica whose event loop is busy
with a burst (or starved of CPU) reads Redis's reply late, and that is not Redis being down;
a refused or reset connection still fails over at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from flexroute.limits.base import WINDOW_SECONDS, Verdict
from flexroute.limits.memory import MemoryLimiter

log = logging.getLogger("flexroute.limits")

_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local window = math.floor(now / tonumber(ARGV[1]))
local key = KEYS[1] .. ':' .. window
local count = redis.call('INCR', key)
if count == 1 then redis.call('EXPIRE', key, 2 * tonumber(ARGV[1])) end
return {count, (window + 1) * tonumber(ARGV[1])}
"""


class RedisLimiter:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "flexroute:",
        timeout: float = 5.0,
        pool_timeout: float = 5.0,
        retry_after: float = 5.0,
        on_fallback: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=pool_timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._script = self._redis.register_script(_SCRIPT)
        self._prefix = prefix
        self._deadline = pool_timeout + 2 * timeout
        self._retry_after = retry_after
        self._on_fallback = on_fallback
        self._clock = clock
        self._down_until = 0.0
        self._fallback = MemoryLimiter()
        self.fallbacks = 0

    async def hit(self, key: str, limit: int) -> Verdict:
        if self._clock() < self._down_until:
            return self._fell_back(key, limit)
        # "{…}" is a hash tag: every window of one key lands on the same cluster slot.
        name = f"{self._prefix}rl:{{{key}}}"
        try:
            with anyio.fail_after(self._deadline):
                count, reset = await self._script(keys=[name], args=[WINDOW_SECONDS])
        # A connection reset mid-reply can surface as a half-read (EOFError) or an unparsable
        # reply (ValueError) as well as Redis's own errors: each is "Redis is unavailable".
        except (RedisError, OSError, TimeoutError, EOFError, ValueError) as error:
            log.warning(
                "flexroute: Redis rate limiter unreachable (%s); enforcing limits per replica "
                "for %.0f s",
                type(error).__name__,
                self._retry_after,
            )
            self._down_until = self._clock() + self._retry_after
            return self._fell_back(key, limit)
        count = int(count)
        return Verdict(count <= limit, limit, max(0, limit - count), int(reset))

    def _fell_back(self, key: str, limit: int) -> Verdict:
        self.fallbacks += 1
        if self._on_fallback is not None:
            self._on_fallback()
        return self._fallback.hit_now(key, limit)

    def statistics(self) -> dict[str, int]:
        return {"fallbacks": self.fallbacks}

    async def aclose(self) -> None:
        await self._redis.aclose()

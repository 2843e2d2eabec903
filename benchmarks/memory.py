"""Memory: RSS of the proxy idle, with 1,000 requests waiting on flex, after they end, and its
growth over 10,000 requests.

``flexroute serve`` in front of the emulator. 1,000 requests whose flex queues for a minute are
sent with ``start_within`` 3 s; RSS is read while they all wait, then again once they have all
fallen back and answered. Then 10,000 more requests (flex that starts at once, 64 at a time)
with RSS read after every tenth of them: growth is the last reading minus the first.

    python -m benchmarks.memory [--quick]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._procs import emulator_and_proxy, rss_bytes

MIB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    waiting: int
    budget: float
    requests: int


FULL = Profile(1000, 3.0, 10_000)
QUICK = Profile(1000, 2.0, 2_000)
SMOKE = Profile(50, 0.5, 200)


async def _measure(
    proxy: str, pid: int, profile: Profile, tick: Callable[[str], None]
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(header: str, budget: float) -> None:
            body = {
                "model": "gpt-5-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "start_within": budget,
            }
            headers = {"authorization": "Bearer bench", "x-emulator": header}
            for attempt in (1, 2):  # a pooled connection the server closed when idle: once more
                try:
                    async with session.post(
                        f"{proxy}/v1/chat/completions", json=body, headers=headers
                    ) as r:
                        await r.read()
                        if r.status != 200:
                            raise RuntimeError(f"memory request failed: {r.status}")
                        return
                except aiohttp.ServerDisconnectedError:
                    if attempt == 2:
                        raise

        for _ in range(20):  # warm the code paths and pools before "idle"
            await send("flex_queue=0;tokens=8", 30)
        idle = rss_bytes([pid])
        tick(f"memory: {profile.waiting} waiting on flex")
        waiting = asyncio.gather(
            *(send("flex_queue=60;tokens=8", profile.budget) for _ in range(profile.waiting))
        )
        await asyncio.sleep(profile.budget * 0.6)
        during = rss_bytes([pid])
        await waiting
        await asyncio.sleep(0.5)
        after = rss_bytes([pid])
        tick(f"memory: growth over {profile.requests} requests")
        readings = []
        remaining = profile.requests
        step = max(1, profile.requests // 10)
        began = time.perf_counter()

        while remaining > 0:
            batch = min(step, remaining)
            target = remaining - batch
            floor = remaining

            async def until(target: int = target) -> None:
                nonlocal remaining
                while remaining > target:
                    remaining -= 1
                    await send("flex_queue=0;tokens=8", 30)

            await asyncio.gather(*(until() for _ in range(min(64, floor - target))))
            readings.append(rss_bytes([pid]))
        elapsed = time.perf_counter() - began
    return {
        "idle_mib": round(idle / MIB, 2),
        "waiting": profile.waiting,
        "waiting_mib": round(during / MIB, 2),
        "per_waiting_kib": round((during - idle) / 1024 / profile.waiting, 2),
        "after_mib": round(after / MIB, 2),
        "requests": profile.requests,
        "readings_mib": [round(r / MIB, 2) for r in readings],
        "growth_mib": round((readings[-1] - readings[0]) / MIB, 2),
        "requests_per_s": round(profile.requests / elapsed, 1),
    }


def run(profile: Profile, tick: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, emulator_and_proxy(Path(tmp)) as (_, proxy, pid):
        return asyncio.run(_measure(proxy, pid, profile, tick))

"""The load generator, in its own process so its CPU never counts against a proxy.

Reads one JSON command per line on stdin, answers one JSON line on stdout. A command runs a
closed loop: ``concurrency`` workers send ``requests`` requests in all (after ``warmup``
uncounted ones), stopping early at ``max_seconds``. For streams the latency is the time to the
first body bytes (time to first byte); ``total_ms`` is the whole exchange either way.

    {"url": "...", "body": {...}, "headers": {...}, "concurrency": 16, "requests": 800,
     "warmup": 32, "stream": false, "max_seconds": 30}
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp


async def _one(
    session: aiohttp.ClientSession, cmd: dict[str, Any], latency: list[float], total: list[float]
) -> str | None:
    began = time.perf_counter()
    async with session.post(cmd["url"], json=cmd["body"], headers=cmd["headers"]) as response:
        if cmd["stream"]:
            first = await response.content.readany()
            latency.append((time.perf_counter() - began) * 1000)
            while first:
                first = await response.content.readany()
        else:
            await response.read()
        total.append((time.perf_counter() - began) * 1000)
        if not cmd["stream"]:
            latency.append(total[-1])
        if response.status != 200:
            return f"HTTP {response.status}"
        return response.headers.get("x-flexroute-route")


async def run(cmd: dict[str, Any]) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        scratch: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(_one(session, cmd, [], scratch) for _ in range(cmd.get("warmup", 0)))
        )
        latency: list[float] = []
        total: list[float] = []
        outcomes: dict[str, int] = {}
        remaining = cmd["requests"]
        stop_at = time.perf_counter() + cmd.get("max_seconds", 60)

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < stop_at:
                remaining -= 1
                try:
                    outcome = await _one(session, cmd, latency, total)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                key = str(outcome)
                outcomes[key] = outcomes.get(key, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cmd["concurrency"])))
        wall = time.perf_counter() - began
    return {
        "latency_ms": latency,
        "total_ms": total,
        "wall_s": wall,
        "warmup": len(scratch),
        "elapsed_s": time.perf_counter() - started,
        "outcomes": outcomes,
    }


def main() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        runner = asyncio.run
    else:
        runner = uvloop.run
    for line in sys.stdin:
        if not line.strip():
            continue
        result = runner(run(json.loads(line)))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

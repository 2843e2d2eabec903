"""SDK wrapper overhead: per-call latency of a ``flexroute.wrap``-ped client vs the bare client.

Both talk to the emulator in fast mode (answers at once), run in its own process on loopback.
Calls alternate bare/wrapped (the order flipping every call) so both see the same machine
state; the ratio is taken within the run. Cases, for the openai sync and async clients:

- ``passthrough``: no budget; the wrapper adds the transport, the engine and a ledger write.
- ``flex``: wrapped with ``start_within`` (flexroute streams the flex attempt and assembles the
  JSON body) vs the bare client asking for ``service_tier="flex"`` itself.

each with the engine's upstream HTTP client the wrapper uses (aiohttp, the default) and with
``Httpx2Upstream``, the alternative.

Goal: under 1 ms added per call at p50.

    python -m benchmarks.sdk_overhead [--calls 400] [--warmup 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai

import flexroute
from benchmarks._procs import fast_emulators
from flexroute import Settings
from flexroute.providers import OPENAI
from flexroute.transport import FlexAsyncTransport, FlexOptions, FlexTransport, upstream_settings
from flexroute.upstream import Httpx2Upstream

RESULTS = Path(__file__).parent / "results" / "sdk_overhead.json"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(name: str, bare: list[float], wrapped: list[float]) -> dict[str, Any]:
    b50, w50 = statistics.median(bare), statistics.median(wrapped)
    b99, w99 = percentile(bare, 0.99), percentile(wrapped, 0.99)
    return {
        "case": name,
        "calls": len(bare),
        "bare_ms": {"p50": round(b50, 3), "p99": round(b99, 3)},
        "wrapped_ms": {"p50": round(w50, 3), "p99": round(w99, 3)},
        "added_ms_p50": round(w50 - b50, 3),
        "ratio_p50": round(w50 / b50, 3),
        "ratio_p99": round(w99 / b99, 3),
    }


def wrapped_client(bare: Any, settings: Settings, flex: bool, upstream: str) -> Any:
    """``flexroute.wrap(bare)``, or the same built by hand with ``Httpx2Upstream``."""
    budget = 30.0 if flex else None
    if upstream == "aiohttp":
        return flexroute.wrap(bare, start_within=budget, settings=settings)
    configured, prefix = upstream_settings(settings, OPENAI, str(bare.base_url))
    options = FlexOptions(configured, OPENAI, prefix, budget, upstream=Httpx2Upstream)
    if isinstance(bare, openai.AsyncOpenAI):
        return bare.copy(http_client=httpx2.AsyncClient(transport=FlexAsyncTransport(options)))
    return bare.copy(http_client=httpx2.Client(transport=FlexTransport(options)))


def sync_case(
    name: str, base: str, settings: Settings, flex: bool, upstream: str, calls: int, warmup: int
) -> dict[str, Any]:
    bare = openai.OpenAI(api_key="bench", base_url=f"{base}/v1", max_retries=0)
    wrapped = wrapped_client(bare, settings, flex, upstream)
    bare_extra: dict[str, Any] = {"service_tier": "flex"} if flex else {}

    def bare_call() -> None:
        bare.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, **bare_extra)

    def wrapped_call() -> None:
        wrapped.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)

    timings: dict[str, list[float]] = {"bare": [], "wrapped": []}
    for i in range(warmup + calls):
        order = [("bare", bare_call), ("wrapped", wrapped_call)]
        for label, call in order if i % 2 else reversed(order):
            began = time.perf_counter()
            call()
            if i >= warmup:
                timings[label].append((time.perf_counter() - began) * 1000)
    wrapped.close()
    bare.close()
    return summary(name, timings["bare"], timings["wrapped"])


async def async_case(
    name: str, base: str, settings: Settings, flex: bool, upstream: str, calls: int, warmup: int
) -> dict[str, Any]:
    bare = openai.AsyncOpenAI(api_key="bench", base_url=f"{base}/v1", max_retries=0)
    wrapped = wrapped_client(bare, settings, flex, upstream)
    bare_extra: dict[str, Any] = {"service_tier": "flex"} if flex else {}

    async def bare_call() -> None:
        await bare.chat.completions.create(model="gpt-5-mini", messages=MESSAGES, **bare_extra)

    async def wrapped_call() -> None:
        await wrapped.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)

    timings: dict[str, list[float]] = {"bare": [], "wrapped": []}
    order: list[tuple[str, Callable[[], Awaitable[None]]]]
    for i in range(warmup + calls):
        order = [("bare", bare_call), ("wrapped", wrapped_call)]
        for label, call in order if i % 2 else reversed(order):
            began = time.perf_counter()
            await call()
            if i >= warmup:
                timings[label].append((time.perf_counter() - began) * 1000)
    await wrapped.close()
    await bare.close()
    return summary(name, timings["bare"], timings["wrapped"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fast_emulators(1) as (base, _):
        settings = Settings(database_url=f"sqlite:///{Path(tmp) / 'bench-ledger.sqlite3'}")
        rows = []
        for upstream in ("aiohttp", "httpx2"):
            for flex in (False, True):
                name = f"{'flex' if flex else 'passthrough'} / {upstream}"
                count = (args.calls, args.warmup)
                rows.append(sync_case(f"sync {name}", base, settings, flex, upstream, *count))
                rows.append(
                    asyncio.run(async_case(f"async {name}", base, settings, flex, upstream, *count))
                )
    print(
        f"{'case':<28} | {'bare p50/p99 ms':>16} | {'wrapped p50/p99 ms':>19} | "
        f"{'added p50 ms':>12} | {'ratio p50/p99':>13}"
    )
    for row in rows:
        b, w = row["bare_ms"], row["wrapped_ms"]
        print(
            f"{row['case']:<28} | {b['p50']:>7.3f} {b['p99']:>8.3f} | "
            f"{w['p50']:>8.3f} {w['p99']:>10.3f} | {row['added_ms_p50']:>12.3f} | "
            f"{row['ratio_p50']:>6.2f} {row['ratio_p99']:>6.2f}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "openai": openai.__version__,
    }
    RESULTS.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

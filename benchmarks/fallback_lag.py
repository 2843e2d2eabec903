"""Fallback precision: how late after its deadline does a request's standard call leave?

Requests whose flex never starts (the emulator queues flex for a minute) are kept in flight
at 1, 100 and 500 at a time with ``start_within`` 1 s, in two arrival patterns:

* ``spread`` — arrivals evenly spaced over one budget, so N requests are in flight together
  and their deadlines are spread as real traffic's are;
* ``burst`` — all N sent at the same instant, so all N deadlines fall within the few
  milliseconds it took to accept them: the worst case, where the fallbacks queue for the CPU.

For each request the ledger's attempt log gives, on the proxy's own clock (uvloop's, 1 ms
resolution), when the flex attempt was closed and when the standard request was sent, both
from the moment flexroute received the request; the lag is that minus the budget.
Goal (2 cores): p99 under 20 ms at 500 concurrent.

    python -m benchmarks.fallback_lag [--levels 1,100,500] [--budget 1.0] [--arrival spread,burst]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._procs import emulator_and_proxy

RESULTS = Path(__file__).parent / "results" / "fallback_lag.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def one_level(proxy: str, n: int, budget: float, arrival: str = "burst") -> dict[str, Any]:
    body = {
        "model": "gpt-5-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "start_within": budget,
    }
    headers = {"authorization": "Bearer bench", "x-emulator": "flex_queue=60;tokens=2"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send() -> str:
            async with session.post(
                f"{proxy}/v1/chat/completions", json=body, headers=headers
            ) as r:
                await r.read()
                if r.headers.get("x-flexroute-route") != "fallback":
                    raise RuntimeError(f"expected a fallback, got {r.status} {dict(r.headers)}")
                return r.headers["x-flexroute-request-id"]

        async def send_at(delay: float) -> str:
            await asyncio.sleep(delay)
            return await send()

        gap = budget / n if arrival == "spread" else 0.0
        ids = await asyncio.gather(*(send_at(i * gap) for i in range(n)))
        sent_lag, close_lag = [], []
        for request_id in ids:
            async with session.get(f"{proxy}/flexroute/v1/requests/{request_id}") as r:
                record = await r.json()
            log = record["attempt_log"]
            flex = next(a for a in log if a["tier"] == "flex")
            standard = next(a for a in log if a["tier"] == "standard")
            close_lag.append(flex["ended_ms"] - budget * 1000)
            sent_lag.append(standard["began_ms"] - budget * 1000)
    return {
        "arrival": arrival,
        "concurrency": n,
        "standard_sent_lag_ms": summary(sent_lag),
        "flex_closed_lag_ms": summary(close_lag),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 3),
        "p99": round(percentile(values, 0.99), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,100,500")
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--arrival", default="spread,burst")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp, emulator_and_proxy(Path(tmp)) as (_, proxy, _pid):
        rows = [
            asyncio.run(one_level(proxy, n, args.budget, arrival))
            for arrival in args.arrival.split(",")
            for n in levels
        ]
    print(
        f"{'arrival':>8} {'in flight':>9} | {'standard sent lag ms p50/p99/max':>32} | "
        f"{'flex closed lag ms p50/p99/max':>30}"
    )
    for row in rows:
        s, c = row["standard_sent_lag_ms"], row["flex_closed_lag_ms"]
        print(
            f"{row['arrival']:>8} {row['concurrency']:>9} | "
            f"{s['p50']:>10.1f} {s['p99']:>10.1f} {s['max']:>10.1f} | "
            f"{c['p50']:>9.1f} {c['p99']:>9.1f} {c['max']:>9.1f}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    RESULTS.write_text(
        json.dumps({"machine": machine, "budget_s": args.budget, "rows": rows}, indent=2) + "\n"
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()

"""Savings against an oracle: real requests through flexroute, steered by seeded traces.

A *trace* says, for each moment, how flex would behave for a request arriving then: how many
times it refuses first (each refusal carries ``retry-after``) and how long it then queues before
its first output. Four scenarios: ``calm`` (short queues, rare refusals), ``busy`` (long
lognormal queues, frequent refusals), ``bursty`` (windows in which flex refuses several times
running), ``outage`` (flex refuses every attempt in the middle half of the run).

A seeded workload mix (models, one of them not flex-capable; prompt sizes; output lengths) is
sent through a real ``flexroute serve`` to the emulator, each request carrying the trace's
verdict as its ``x-emulator`` header, once per ``start_within`` budget — the same trace and
workload for every budget. Costs and waits come from the ledger record of each request.

The *oracle* knows when flex would start (``refusals × retry_after + queue``): with the same
budget it sends a request to flex only if flex starts within the budget, and otherwise straight
to standard without waiting. The *ceiling* is every flex-capable request served at flex,
however long it takes. Report: share served at flex, saving as a share of the oracle's and the
ceiling's, and the added wait (``flex_wait_ms``: time before the answer started that going
straight to standard would not have spent) p50/p99.

    python -m benchmarks.savings [--quick]
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._procs import emulator_and_proxy
from benchmarks._stats import percentile, spread
from flexroute.catalog import default_catalog
from flexroute.usage import Tier, Usage

SCENARIOS = ("calm", "busy", "bursty", "outage")
MODELS = (("gpt-5-mini", 0.55), ("gpt-5", 0.25), ("gpt-5-nano", 0.1), ("gpt-4.1-mini", 0.1))
PROMPTS = (200, 2_000, 20_000)
NEVER = math.inf


@dataclass(frozen=True)
class Profile:
    seeds: tuple[int, ...]
    budgets: tuple[float, ...]
    requests: int
    span: float  # seconds over which one batch's arrivals are spread


FULL = Profile((1, 2, 3), (0.25, 0.5, 1.0, 2.0, 4.0), 150, 3.0)
QUICK = Profile((1,), (0.5, 2.0), 40, 1.0)
SMOKE = Profile((1,), (0.5,), 12, 0.5)


@dataclass(frozen=True)
class Planned:
    at: float  # arrival, seconds from the batch start
    model: str
    prompt_tokens: int
    tokens: int
    refusals: int | None  # None: refuses every attempt
    retry_after: float
    queue: float

    @property
    def flex_starts_after(self) -> float:
        """When flex would start, from arrival (what the oracle knows)."""
        if self.refusals is None:
            return NEVER
        return self.refusals * self.retry_after + self.queue

    def header(self) -> str:
        refuse = "always" if self.refusals is None else str(self.refusals)
        return (
            f"flex_queue={self.queue:.3f};flex_refuse={refuse};retry_after={self.retry_after};"
            f"prompt_tokens={self.prompt_tokens};tokens={self.tokens}"
        )


def trace(scenario: str, seed: int, profile: Profile) -> list[Planned]:
    """The seeded workload of one scenario: arrival, request shape and flex's verdict."""
    rng = random.Random(f"{scenario}-{seed}")
    bursts = {w for w in range(64) if rng.random() < 0.35}
    planned = []
    for i in range(profile.requests):
        at = profile.span * i / profile.requests
        model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        prompt, tokens = rng.choice(PROMPTS), rng.randint(4, 40)
        gauss, uniform = rng.gauss(0.0, 1.0), rng.random()
        refusals: int | None
        if scenario == "calm":
            queue, refusals, retry = 0.08 * math.exp(0.8 * gauss), int(uniform < 0.03), 0.2
        elif scenario == "busy":
            queue, retry = 0.8 * math.exp(1.0 * gauss), 0.5
            refusals = 0 if uniform > 0.2 else 1 + int(uniform * 10)
        elif scenario == "bursty":
            window = int(at / (profile.span / 8))
            queue, retry = 0.15 * math.exp(0.8 * gauss), 0.3
            refusals = 1 + int(uniform * 5) if window in bursts else 0
        else:  # outage: flex refuses everything in the middle half of the run
            queue, retry = 0.1 * math.exp(0.8 * gauss), 0.5
            refusals = None if 0.25 <= at / profile.span < 0.75 else 0
        planned.append(Planned(at, model, prompt, tokens, refusals, retry, min(queue, 30.0)))
    return planned


async def send_batch(proxy: str, planned: list[Planned], budget: float) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(p: Planned) -> dict[str, Any]:
            await asyncio.sleep(p.at)
            body = {
                "model": p.model,
                "messages": [{"role": "user", "content": "summarise the attached"}],
                "start_within": budget,
            }
            headers = {"authorization": "Bearer bench", "x-emulator": p.header()}
            async with session.post(
                f"{proxy}/v1/chat/completions", json=body, headers=headers
            ) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"savings request failed: {r.status}")
                request_id = r.headers["x-flexroute-request-id"]
            async with session.get(f"{proxy}/flexroute/v1/requests/{request_id}") as r:
                record: dict[str, Any] = await r.json()
            return record

        return list(await asyncio.gather(*(one(p) for p in planned)))


def score(planned: list[Planned], records: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    catalog = default_catalog()
    saved = oracle = ceiling = Decimal(0)
    at_flex = oracle_flex = 0
    waits, oracle_waits = [], []
    for p, record in zip(planned, records, strict=True):
        saved += Decimal(record["saving_usd"])
        at_flex += record["tier_served"] == "flex"
        waits.append(float(record["flex_wait_ms"] or 0))
        prices = catalog.lookup("openai", p.model)
        if prices is None or not prices.flex_capable:
            oracle_waits.append(0.0)
            continue
        usage = Usage(**record["usage"])
        could = prices.cost(Tier.STANDARD, usage) - prices.cost(Tier.FLEX, usage)
        ceiling += could
        if p.flex_starts_after <= budget:
            oracle += could
            oracle_flex += 1
            oracle_waits.append(p.flex_starts_after * 1000)
        else:
            oracle_waits.append(0.0)
    n = len(records)
    return {
        "budget_s": budget,
        "requests": n,
        "served_flex_share": round(at_flex / n, 4),
        "oracle_flex_share": round(oracle_flex / n, 4),
        "saving_usd": str(saved),
        "oracle_saving_usd": str(oracle),
        "ceiling_saving_usd": str(ceiling),
        "saving_vs_oracle": float(round(saved / oracle, 4)) if oracle else None,
        "saving_vs_ceiling": float(round(saved / ceiling, 4)) if ceiling else None,
        "added_wait_ms": {
            "p50": statistics.median(waits),
            "p99": percentile(waits, 0.99),
        },
        "oracle_wait_ms": {
            "p50": statistics.median(oracle_waits),
            "p99": percentile(oracle_waits, 0.99),
        },
    }


def run(profile: Profile, tick: Callable[[str], None]) -> dict[str, Any]:
    runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, emulator_and_proxy(Path(tmp)) as (_, proxy, _p):
        for seed in profile.seeds:
            for scenario in SCENARIOS:
                planned = trace(scenario, seed, profile)
                for budget in profile.budgets:
                    tick(f"savings seed {seed} {scenario} start_within={budget:g}s")
                    records = asyncio.run(send_batch(proxy, planned, budget))
                    runs.setdefault((scenario, budget), []).append(score(planned, records, budget))
    rows = []
    for (scenario, budget), found in runs.items():
        rows.append(
            {
                "scenario": scenario,
                "budget_s": budget,
                "runs": len(found),
                "requests": found[0]["requests"],
                **{
                    key: spread(r[key] for r in found)
                    for key in (
                        "served_flex_share",
                        "oracle_flex_share",
                        "saving_vs_oracle",
                        "saving_vs_ceiling",
                    )
                },
                "added_wait_p50_ms": spread(r["added_wait_ms"]["p50"] for r in found),
                "added_wait_p99_ms": spread(r["added_wait_ms"]["p99"] for r in found),
                "oracle_wait_p50_ms": spread(r["oracle_wait_ms"]["p50"] for r in found),
                "oracle_wait_p99_ms": spread(r["oracle_wait_ms"]["p99"] for r in found),
            }
        )
    return {
        "seeds": list(profile.seeds),
        "span_s": profile.span,
        "rows": rows,
        "runs": {f"{s}@{b}": found for (s, b), found in runs.items()},
    }

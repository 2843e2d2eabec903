"""Savings against an oracle: real requests through flexroute, steered by seeded traces.

A *trace* (:mod:`benchmarks._traces`) says, for each request, when it arrives and what flex
will do with it: how many times it refuses first (each refusal carries ``retry-after``) and
how long it then queues before its first output. Scripted traces (``calm``, ``busy``,
``bursty``, ``outage``) draw each verdict on its own over a few seconds; stochastic ones
(``stoch-calm``, ``stoch-outage``) read it from a seeded Markov process of flex capacity per
model (calm, degraded, outage, recovery; :mod:`flexroute.emulator.weather`) over a minute or
so, so that flex comes and goes in waves.

Each trace is replayed once per ``start_within`` budget and flex mode (``always`` and
``adaptive``, set by ``FLEXROUTE_FLEX_MODE``), each pair on a fresh ``flexroute serve`` (so no
run learns from another) sharing one emulator, the runs of one group side by side in time.
Every request carries its verdict as its ``x-emulator`` header; costs, waits and attempts come
from its ledger record.

The *oracle* knows when flex would start (``refusals × retry_after + queue``): with the same
budget it sends a request to flex only if flex starts within the budget, and otherwise straight
to standard without waiting. The *ceiling* is every flex-capable request served at flex,
however long it takes. Reported per trace, budget and mode: share of flex-capable requests sent
to flex (the oracle's: those it would send), share served at flex, saving as a share of the
oracle's and the ceiling's, and the added wait (``flex_wait_ms``: time before the answer
started that going straight to standard would not have spent) p50/p99 beside the oracle's.
Goals (issue 13): in ``stoch-outage`` adaptive cuts added wait p99 by ≥ 80% against ``always``
while keeping ≥ 95% of the oracle's saving; in ``stoch-calm`` it loses < 1% of ``always``'s
saving.

On stochastic traces a second reference, the *state-knowing* router, knows each model's weather
at every moment but not each request's fate (more than a router that learns from what it sees
can know): it skips flex exactly while the model's weather is ``outage`` (where flex starts
within these budgets for a few per cent of requests; in the other states for well over the
adaptive threshold of 0.2) and otherwise sends with the whole budget, waiting it out when flex
does not start (an upper bound on its wait: a refusal whose ``Retry-After`` passes the deadline
falls back sooner). Its saving ÷ the oracle's shows how much of the saving goal knowing the
state alone reaches.

    python -m benchmarks.savings [--quick | --smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._procs import emulator_process, proxies
from benchmarks._stats import percentile, spread
from benchmarks._traces import SCRIPTED, STOCHASTIC, Planned, build
from flexroute.catalog import default_catalog
from flexroute.usage import Tier, Usage

MODES = ("always", "adaptive")


@dataclass(frozen=True)
class Batch:
    """Traces replayed alike: seeds, budgets, requests per trace, seconds they span, and how
    many budgets run side by side (each with one proxy per mode)."""

    traces: tuple[str, ...]
    seeds: tuple[int, ...]
    budgets: tuple[float, ...]
    requests: int
    span: float
    side_by_side: int


@dataclass(frozen=True)
class Profile:
    batches: tuple[Batch, ...]


FULL = Profile(
    (
        Batch(SCRIPTED, (1, 2, 3), (0.25, 0.5, 1.0, 2.0, 4.0), 150, 3.0, 1),
        Batch(STOCHASTIC, (1, 2), (0.25, 0.5, 1.0, 2.0, 4.0), 480, 80.0, 5),
    )
)
QUICK = Profile(
    (
        Batch(SCRIPTED, (1,), (0.5, 2.0), 40, 1.0, 1),
        Batch(STOCHASTIC, (1,), (0.5, 1.0, 2.0), 200, 40.0, 3),
    )
)
SMOKE = Profile(
    (
        Batch(("calm", "outage"), (1,), (0.5,), 12, 0.5, 1),
        Batch(("stoch-outage",), (1,), (0.5,), 24, 4.0, 1),
    )
)


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


async def send_group(
    cells: list[tuple[str, float, str]], planned: list[Planned]
) -> list[list[dict[str, Any]]]:
    """Replay ``planned`` through every (mode, budget, proxy) cell at once."""
    runs = [send_batch(proxy, planned, budget) for _, budget, proxy in cells]
    return list(await asyncio.gather(*runs))


def _sent_to_flex(record: dict[str, Any]) -> bool:
    return any(entry.get("tier") == "flex" for entry in record.get("attempt_log") or [])


def score(planned: list[Planned], records: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    catalog = default_catalog()
    saved = oracle = ceiling = knowing = Decimal(0)
    at_flex = oracle_flex = capable = sent = 0
    waits, oracle_waits, knowing_waits = [], [], []
    for p, record in zip(planned, records, strict=True):
        saved += Decimal(record["saving_usd"])
        at_flex += record["tier_served"] == "flex"
        waits.append(float(record["flex_wait_ms"] or 0))
        prices = catalog.lookup("openai", p.model)
        if prices is None or not prices.flex_capable:
            oracle_waits.append(0.0)
            knowing_waits.append(0.0)
            continue
        capable += 1
        sent += _sent_to_flex(record)
        usage = Usage(**record["usage"])
        could = prices.cost(Tier.STANDARD, usage) - prices.cost(Tier.FLEX, usage)
        ceiling += could
        starts = p.flex_starts_after <= budget
        if starts:
            oracle += could
            oracle_flex += 1
        oracle_waits.append(p.flex_starts_after * 1000 if starts else 0.0)
        if p.weather is not None and p.weather != "outage":  # the state-knowing router sends
            knowing += could if starts else 0
            knowing_waits.append(min(p.flex_starts_after, budget) * 1000)
        else:
            knowing_waits.append(0.0)
    n = len(records)
    stochastic = planned[0].weather is not None if planned else False
    return {
        "budget_s": budget,
        "requests": n,
        "sent_flex_share": round(sent / capable, 4) if capable else None,
        "oracle_sent_share": round(oracle_flex / capable, 4) if capable else None,
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
            "mean": round(statistics.fmean(waits), 1),
        },
        "oracle_wait_ms": {
            "p50": statistics.median(oracle_waits),
            "p99": percentile(oracle_waits, 0.99),
            "mean": round(statistics.fmean(oracle_waits), 1),
        },
        # the state-knowing router (stochastic traces): see the module docstring
        "knowing_vs_oracle": (float(round(knowing / oracle, 4)) if stochastic and oracle else None),
        "knowing_wait_mean_ms": (round(statistics.fmean(knowing_waits), 1) if stochastic else None),
    }


def adaptive_available(proxy: str) -> bool:
    """Whether this build has the adaptive mode (it serves ``GET /flexroute/v1/flex``)."""
    try:
        with urllib.request.urlopen(f"{proxy}/flexroute/v1/flex", timeout=10):  # noqa: S310
            return True
    except urllib.error.HTTPError:
        return False


def run(
    profile: Profile, tick: Callable[[str], None], settings: dict[str, str] | None = None
) -> dict[str, Any]:
    """Every batch of ``profile``; ``settings`` (``FLEXROUTE_…`` variables) go to every proxy."""
    runs: dict[tuple[str, float], list[dict[str, dict[str, Any]]]] = {}
    notes = [f"savings: every proxy ran with {settings}"] if settings else []
    checked = False
    with tempfile.TemporaryDirectory() as tmp, emulator_process() as emulator:
        for batch in profile.batches:
            for seed in batch.seeds:
                for trace in batch.traces:
                    planned = build(trace, seed, batch.requests, batch.span)
                    for at in range(0, len(batch.budgets), batch.side_by_side):
                        budgets = batch.budgets[at : at + batch.side_by_side]
                        tick(f"savings seed {seed} {trace} start_within={budgets}")
                        wanted = [(m, b) for b in budgets for m in MODES]
                        envs = [{**(settings or {}), "FLEXROUTE_FLEX_MODE": m} for m, _ in wanted]
                        where = Path(tmp) / f"{trace}-{seed}-{at}"
                        with proxies(emulator, where, envs) as urls:
                            if not checked and not adaptive_available(urls[0]):
                                notes.append(
                                    "savings: this build has no adaptive flex mode yet "
                                    "(no GET /flexroute/v1/flex): its column runs as always"
                                )
                            checked = True
                            cells = [(m, b, u) for (m, b), u in zip(wanted, urls, strict=True)]
                            found = asyncio.run(send_group(cells, planned))
                        for (mode, budget, _), records in zip(cells, found, strict=True):
                            scored = score(planned, records, budget)
                            slot = runs.setdefault((trace, budget), [])
                            if not slot or mode in slot[-1]:
                                slot.append({})
                            slot[-1][mode] = scored
    rows = [_row(trace, budget, found) for (trace, budget), found in runs.items()]
    return {
        "batches": [
            {"traces": list(b.traces), "seeds": list(b.seeds), "span_s": b.span}
            for b in profile.batches
        ],
        "rows": rows,
        "goals": goals(rows),
        "notes": notes,
        "settings": settings or {},
        "runs": {f"{t}@{b}": found for (t, b), found in runs.items()},
    }


_FIGURES = ("sent_flex_share", "served_flex_share", "saving_vs_oracle", "saving_vs_ceiling")


def _row(trace: str, budget: float, found: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """One (trace, budget): each mode's figures as spreads over seeds, and the paired ratios."""
    row: dict[str, Any] = {"scenario": trace, "budget_s": budget, "runs": len(found)}
    first = found[0][MODES[0]]
    row["requests"] = first["requests"]
    for key in ("oracle_sent_share", "oracle_flex_share"):
        row[key] = spread(r[MODES[0]][key] for r in found)
    row["oracle_wait_p50_ms"] = spread(r[MODES[0]]["oracle_wait_ms"]["p50"] for r in found)
    row["oracle_wait_p99_ms"] = spread(r[MODES[0]]["oracle_wait_ms"]["p99"] for r in found)
    row["knowing_vs_oracle"] = spread(r[MODES[0]]["knowing_vs_oracle"] for r in found)
    row["knowing_wait_mean_ms"] = spread(r[MODES[0]]["knowing_wait_mean_ms"] for r in found)
    row["oracle_vs_ceiling"] = spread(
        _div(float(r[MODES[0]]["oracle_saving_usd"]), float(r[MODES[0]]["ceiling_saving_usd"]))
        for r in found
    )
    for mode in MODES:
        scores = [r[mode] for r in found]
        figures = {key: spread(s[key] for s in scores) for key in _FIGURES}
        figures["added_wait_p50_ms"] = spread(s["added_wait_ms"]["p50"] for s in scores)
        figures["added_wait_p99_ms"] = spread(s["added_wait_ms"]["p99"] for s in scores)
        figures["wait_p99_vs_oracle"] = spread(
            _div(s["added_wait_ms"]["p99"], s["oracle_wait_ms"]["p99"]) for s in scores
        )
        row[mode] = figures
    row["adaptive_saving_vs_always"] = spread(
        _div(float(r["adaptive"]["saving_usd"]), float(r["always"]["saving_usd"])) for r in found
    )
    row["adaptive_wait_p99_vs_always"] = spread(
        _div(r["adaptive"]["added_wait_ms"]["p99"], r["always"]["added_wait_ms"]["p99"])
        for r in found
    )
    row["oracle_wait_p99_vs_always"] = spread(
        _div(r["always"]["oracle_wait_ms"]["p99"], r["always"]["added_wait_ms"]["p99"])
        for r in found
    )
    row["adaptive_excess_p99_share"] = spread(_excess(r) for r in found)
    return row


def _excess(run: dict[str, dict[str, Any]]) -> float | None:
    """The share of always's added wait p99 in excess of the oracle's that adaptive keeps."""
    oracle = run["always"]["oracle_wait_ms"]["p99"]
    always, adaptive = (run[m]["added_wait_ms"]["p99"] for m in ("always", "adaptive"))
    return _div(max(0.0, adaptive - oracle), always - oracle) if always > oracle else None


def _div(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _median(node: dict[str, Any] | None) -> float | None:
    return None if node is None else float(node["median"])


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 13's goals, per stochastic trace and budget (reported, not asserted).

    The p99 goal is read two ways: literally (adaptive's p99 ≤ 0.2× always's), beside its
    bound — the oracle's own p99 ÷ always's: a router that keeps the oracle's saving waits for
    the late starts the oracle waits for, so above 0.2 the literal goal is out of reach on
    that trace — and as the share of always's p99 *in excess of the oracle's* that adaptive
    keeps (≤ 0.2)."""
    out: list[dict[str, Any]] = []

    def goal(text: str, value: float | None, passed: bool | None) -> None:
        out.append({"goal": text, "value": value, "passed": passed})

    for row in rows:
        budget = f"{row['budget_s']:g} s"
        if row["scenario"] == "stoch-outage":
            cut = _median(row["adaptive_wait_p99_vs_always"])
            kept = _median(row["adaptive"]["saving_vs_oracle"])
            goal(
                f"stoch-outage {budget}: adaptive added wait p99 ≤ 0.2× always's",
                cut,
                None if cut is None else cut <= 0.2,
            )
            bound = _median(row["oracle_wait_p99_vs_always"])
            goal(f"stoch-outage {budget}: (bound) oracle's added wait p99 ÷ always's", bound, None)
            excess = _median(row["adaptive_excess_p99_share"])
            goal(
                f"stoch-outage {budget}: adaptive keeps ≤ 0.2 of always's p99 excess over oracle",
                excess,
                None if excess is None else excess <= 0.2,
            )
            goal(
                f"stoch-outage {budget}: adaptive saving ≥ 0.95× oracle's",
                kept,
                None if kept is None else kept >= 0.95,
            )
            knowing = _median(row["knowing_vs_oracle"])
            goal(f"stoch-outage {budget}: (bound) state-knowing router's saving ÷ oracle's",
                 knowing, None)  # fmt: skip
        elif row["scenario"] == "stoch-calm":
            kept = _median(row["adaptive_saving_vs_always"])
            goal(
                f"stoch-calm {budget}: adaptive saving ≥ 0.99× always's",
                kept,
                None if kept is None else kept >= 0.99,
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.savings", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FLEXROUTE_NAME=VALUE",
        help="a setting for every proxy, e.g. FLEXROUTE_FLEX_HALF_LIFE=10 (repeatable)",
    )
    args = parser.parse_args(argv)
    profile = SMOKE if args.smoke else QUICK if args.quick else FULL
    settings = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FLEXROUTE_"):
            parser.error(f"--set {item!r}: give FLEXROUTE_NAME=VALUE")
        settings[name] = value
    from benchmarks import _report

    result = run(profile, lambda step: print(step, file=sys.stderr, flush=True), settings)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    for title, header, rows in _report.tables({"savings": result}):
        print(f"\n{title}\n{_report.text_table(header, rows)}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``flexroute batch`` on a Batch API file: wall time, CPU, saving ÷ oracle, and the 24-hour window.

A seeded file of OpenAI chat lines (the savings benchmark's model mix, one model not
flex-capable) runs through the real command — the engine in process, a SQLite ledger — against
a fast-mode emulator process, in two scenarios:

- ``calm``: flex starts at once for every line;
- ``refusing``: every line's first flex attempt is refused with ``retry-after`` 0.2 s, then
  flex queues 0.05 s (the emulator's ``x-emulator`` header, given with ``--header``), so each
  line waits out a refusal inside its budget.

The *oracle* knows flex starts within the budget for every flex-capable line (0 s and 0.25 s
against 60 s), so it serves each of them at flex and the rest at standard; its saving is the
standard cost minus the flex cost of each flex-capable line's usage, from the ledger. For these
models the Batch API bills the flex rates (the catalog's notes: "Batch and Flex 50%"), so
saving ÷ oracle is also saving ÷ what the Batch API would have saved.

Baseline in the same run: the same number of requests sent straight to the emulator by the
harness's load generator at the same concurrency (no engine, no ledger, no output file):
*batch ÷ direct* is the wall time flexroute adds. The 24-hour comparison is the Batch API's
completion window (24 h, its worst case) divided by the batch's wall time.

    python -m benchmarks.batch [--quick | --smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio

from benchmarks._procs import cpu_seconds, free_port, module_process
from benchmarks._traces import MODELS
from flexroute.catalog import default_catalog
from flexroute.ledger import open_store
from flexroute.usage import Tier

SCENARIOS = {"calm": None, "refusing": "flex_refuse=1;retry_after=0.2;flex_queue=0.05"}
WINDOW_S = 24 * 3600  # the Batch API's completion window


@dataclass(frozen=True)
class Profile:
    lines: dict[str, int]  # per scenario
    concurrency: int


FULL = Profile({"calm": 10_000, "refusing": 2_000}, 64)
QUICK = Profile({"calm": 2_000, "refusing": 500}, 64)
SMOKE = Profile({"calm": 200, "refusing": 50}, 32)


def write_input(path: Path, lines: int, seed: int) -> list[str]:
    """The seeded batch file; returns each line's model, in order."""
    rng = random.Random(seed)
    models = []
    with path.open("w") as file:
        for i in range(lines):
            model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
            text = f"Label item {i}: " + " ".join(rng.choice(("red", "blue", "big")) for _ in "abc")
            body = {"model": model, "messages": [{"role": "user", "content": text}]}
            line = {"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions",
                    "body": body}  # fmt: skip
            file.write(json.dumps(line) + "\n")
            models.append(model)
    return models


def run_batch(
    work: Path, emulator: str, scenario: str, lines: int, concurrency: int
) -> dict[str, Any]:
    source, out = work / f"{scenario}.jsonl", work / f"{scenario}-out.jsonl"
    database = f"sqlite:///{work / f'{scenario}.sqlite3'}"
    write_input(source, lines, seed=lines)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXROUTE_")}
    env.update(FLEXROUTE_OPENAI_BASE_URL=f"{emulator}/v1", FLEXROUTE_DATABASE_URL=database,
               OPENAI_API_KEY="sk-bench")  # fmt: skip
    args = [sys.executable, "-m", "flexroute.cli", "batch", str(source), "-o", str(out),
            "--concurrency", str(concurrency), "--json-summary", "--no-progress"]  # fmt: skip
    header = SCENARIOS[scenario]
    if header:
        args += ["--header", f"x-emulator: {header}"]
    done, cpu, process_wall = _timed(args, env)
    summary: dict[str, Any] = json.loads(done.stdout)
    empty = work / "empty.jsonl"
    empty.write_text("")
    _, startup_cpu, _ = _timed([*args[:4], str(empty), "-o", str(work / "empty-out.jsonl")], env)
    oracle = anyio.run(_oracle, out.read_text().splitlines(), database)
    saving = Decimal(summary["saving_usd"])
    wall = summary["wall_seconds"]
    return {
        "scenario": scenario,
        "lines": lines,
        "concurrency": concurrency,
        "wall_s": wall,
        "lines_per_s": round(lines / wall, 1),
        "process_wall_s": round(process_wall, 3),
        "cpu_s": round(cpu, 2),
        "startup_cpu_s": round(startup_cpu, 2),  # the same command on an empty file
        "cpu_ms_per_line": round(max(0.0, cpu - startup_cpu) * 1000 / lines, 3),
        "served_flex_share": round(summary["served_flex"] / lines, 4),
        "fallbacks": summary["fallbacks"],
        "errors": summary["errors"],
        "saving_usd": summary["saving_usd"],
        "oracle_saving_usd": str(oracle),
        "saving_vs_oracle": float(round(saving / oracle, 4)) if oracle else None,
        "window_vs_wall": round(WINDOW_S / wall, 1),
    }


def _timed(
    args: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run the command; its output, its CPU seconds (user + system) and its wall seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600, check=False)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"flexroute batch failed: {done.stderr[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, cpu, wall


async def _oracle(lines: list[str], database: str) -> Decimal:
    """Standard minus flex cost of every flex-capable line's usage, from its ledger record."""
    catalog = default_catalog()
    store = open_store(database)
    total = Decimal(0)
    try:
        for text in lines:
            line = json.loads(text)
            record = await store.get("frq_" + line["id"].removeprefix("batch_req_"))
            if record is None or record.model is None or record.usage is None:
                continue
            prices = catalog.lookup("openai", record.model)
            if prices is None or not prices.flex_capable:
                continue
            usage = record.usage
            total += prices.cost(Tier.STANDARD, usage) - prices.cost(Tier.FLEX, usage)
    finally:
        await store.aclose()
    return total


def direct(emulator: str, requests: int, concurrency: int) -> float:
    """Wall seconds for the load generator to send ``requests`` flex requests straight to the
    emulator, ``concurrency`` at a time."""
    body = {"model": "gpt-5-mini", "service_tier": "flex",
            "messages": [{"role": "user", "content": "Label item 0: red blue big"}]}  # fmt: skip
    command = {"url": f"{emulator}/v1/chat/completions", "body": body,
               "headers": {"authorization": "Bearer sk-bench"}, "concurrency": concurrency,
               "requests": requests, "warmup": 0, "stream": False, "max_seconds": 600}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._loadgen"], input=json.dumps(command) + "\n",
        capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    wall: float = json.loads(done.stdout)["wall_s"]
    return wall


def run(profile: Profile, tick: Callable[[str], None]) -> dict[str, Any]:
    rows = []
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory() as tmp,
        module_process(
            "benchmarks._fast_emulator", ["--port", str(port)], f"{emulator}/v1/models"
        ) as emu,
    ):
        for scenario, lines in profile.lines.items():
            tick(f"batch {scenario}: {lines} lines")
            emu_before = cpu_seconds([emu.pid])
            row = run_batch(Path(tmp), emulator, scenario, lines, profile.concurrency)
            row["emulator_cpu_s"] = round(cpu_seconds([emu.pid]) - emu_before, 2)
            if scenario == "calm":
                tick(f"batch baseline: {lines} requests straight to the emulator")
                wall = direct(emulator, lines, profile.concurrency)
                row["direct_wall_s"] = round(wall, 3)
                row["batch_vs_direct"] = round(row["wall_s"] / wall, 2)
            rows.append(row)
    calm = rows[0]
    goals = [{"goal": "batch saving ÷ oracle ≥ 0.99 (calm)",
              "value": calm["saving_vs_oracle"],
              "passed": None if calm["saving_vs_oracle"] is None
              else calm["saving_vs_oracle"] >= 0.99}]  # fmt: skip
    return {"rows": rows, "window_s": WINDOW_S, "goals": goals}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    profile = SMOKE if args.smoke else QUICK if args.quick else FULL
    print(json.dumps(run(profile, lambda step: print(step, file=sys.stderr)), indent=2))


if __name__ == "__main__":
    main()

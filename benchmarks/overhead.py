"""Overhead against peers, in one run: what each proxy adds on top of talking direct.

One fast-mode emulator (answers at once; several worker processes on one port so it is not the
bottleneck: its CPU use is measured and reported), one load generator in a process of its own,
the same request for every target, and the targets alternated cell by cell (A B C A B C):

* ``direct`` — straight to the emulator;
* ``flexroute`` — ``flexroute serve``, passthrough (no ``start_within``);
* ``flexroute-flex`` — the same with ``start_within`` (flex starts at once in fast mode, so
  flexroute streams the flex attempt, commits and assembles the JSON body);
* ``flexroute-2w`` — ``flexroute serve --workers 2``, passthrough: what a second process buys
  (its throughput against ``flexroute``'s; its CPU is both workers' and the supervisor's);
* ``floor`` — ``benchmarks/floor_proxy.py``, a minimal aiohttp passthrough proxy;
* ``litellm`` — the LiteLLM proxy from PyPI, in a venv of its own (see ``peers.py``).

Per cell: latency p50/p99 (streams: time to first byte), throughput, and the CPU time of the
proxy's processes per request, read from /proc/PID/stat before and after. Added latency is the
target's p50/p99 minus direct's in the same round. A second streaming pass with long streams
(``x-emulator: tokens=N``) gives flexroute's CPU per streamed event.

    python -m benchmarks.overhead [--rounds 5] [--quick]
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks import peers
from benchmarks._procs import (
    cpu_seconds,
    descendants,
    fast_emulators,
    free_port,
    module_process,
    process,
)
from benchmarks._stats import percentile, ratio, spread

MODEL = peers.MODEL
BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
HEADERS = {"authorization": "Bearer bench"}
SHORT_TOKENS, LONG_TOKENS = 8, 200
LITELLM_AUTH = {"authorization": f"Bearer {peers.MASTER_KEY}"}


@dataclass(frozen=True)
class Profile:
    rounds: int
    concurrency: tuple[int, ...]
    requests: dict[int, int]  # per concurrency
    max_seconds: float
    emulator_workers: int
    with_litellm: bool
    event_requests: int


FULL = Profile(5, (1, 16, 64), {1: 300, 16: 1500, 64: 3000}, 6.0, 2, True, 600)
QUICK = Profile(2, (1, 16, 64), {1: 60, 16: 300, 64: 600}, 1.5, 2, True, 200)
SMOKE = Profile(1, (1, 16), {1: 20, 16: 80}, 1.0, 1, False, 40)


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pids: list[int]  # the proxy's processes (empty for direct)
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class LoadGen:
    """The load generator process; one JSON command in, one JSON result out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._proc = proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        self._stdin: IO[str] = proc.stdin
        self._stdout: IO[str] = proc.stdout

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self._stdin.write(json.dumps(cmd) + "\n")
        self._stdin.flush()
        line = self._stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        result: dict[str, Any] = json.loads(line)
        return result


@contextlib.contextmanager
def loadgen() -> Iterator[LoadGen]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield LoadGen(proc)
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(
    gen: LoadGen,
    target: Target,
    emulator_pids: list[int],
    *,
    concurrency: int,
    requests: int,
    stream: bool,
    max_seconds: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = {**BODY, **target.body, **({"stream": True} if stream else {})}
    cmd = {
        "url": f"{target.url}/v1/chat/completions",
        "body": body,
        "headers": {**HEADERS, **target.headers, **(headers or {})},
        "concurrency": concurrency,
        "requests": requests,
        "warmup": concurrency,
        "stream": stream,
        "max_seconds": max_seconds,
    }
    pids = [p for pid in target.pids for p in descendants(pid)]
    cpu0, emu0 = cpu_seconds(pids), cpu_seconds(emulator_pids)
    out = gen.run(cmd)
    cpu1, emu1 = cpu_seconds(pids), cpu_seconds(emulator_pids)
    done = len(out["latency_ms"])
    served = done + out["warmup"]  # the CPU reading spans the warm-up requests too
    ok = sum(n for k, n in out["outcomes"].items() if not k.startswith(("HTTP", "Client")))
    wall = out["wall_s"]
    return {
        "target": target.name,
        "stream": stream,
        "concurrency": concurrency,
        "requests": done,
        "ok": ok,
        "outcomes": out["outcomes"],
        "p50_ms": statistics.median(out["latency_ms"]) if done else None,
        "p99_ms": percentile(out["latency_ms"], 0.99) if done else None,
        "throughput_rps": done / wall if wall else None,
        "served": served,
        "cpu_s": (cpu1 - cpu0) if target.pids else None,
        "emulator_busy": (emu1 - emu0) / (out["elapsed_s"] * len(emulator_pids)),
    }


@contextlib.contextmanager
def targets(
    profile: Profile, workdir: Path, notes: list[str], versions: dict[str, str | None]
) -> Iterator[tuple[list[Target], list[int]]]:
    with contextlib.ExitStack() as stack:
        emulator, emulator_pids = stack.enter_context(fast_emulators(profile.emulator_workers))
        found = [Target("direct", emulator, [])]
        fport = free_port()
        flex_url = f"http://127.0.0.1:{fport}"
        env = {
            "FLEXROUTE_OPENAI_BASE_URL": emulator,
            "FLEXROUTE_DATABASE_URL": f"sqlite:///{workdir / 'overhead-ledger.sqlite3'}",
            "OPENAI_API_KEY": "",
        }
        fpid = stack.enter_context(
            process(
                ["serve", "--port", str(fport), "--workers", "1"],
                f"{flex_url}/flexroute/v1/health",
                env,
            )
        )
        found += [
            Target("flexroute", flex_url, [fpid]),
            Target("flexroute-flex", flex_url, [fpid], {"start_within": "30s"}),
        ]
        two_port = free_port()
        two_url = f"http://127.0.0.1:{two_port}"
        two_env = {**env, "FLEXROUTE_DATABASE_URL": f"sqlite:///{workdir / 'overhead-2w.sqlite3'}"}
        two_pid = stack.enter_context(
            process(
                ["serve", "--port", str(two_port), "--workers", "2"],
                f"{two_url}/flexroute/v1/health",
                two_env,
            )
        )
        found.append(Target("flexroute-2w", two_url, [two_pid]))
        floor_port = free_port()
        floor_url = f"http://127.0.0.1:{floor_port}"
        floor = stack.enter_context(
            module_process(
                "benchmarks.floor_proxy",
                ["--port", str(floor_port), "--upstream", emulator],
                f"{floor_url}/v1/models",
            )
        )
        found.append(Target("floor", floor_url, [floor.pid]))
        if not profile.with_litellm:
            notes.append("LiteLLM: skipped (smoke mode runs without peers)")
        else:
            exe, version = peers.litellm_status()
            if exe is None:
                notes.append(f"LiteLLM: skipped — {version}")
            else:
                try:
                    url, pid = stack.enter_context(peers.litellm_proxy(exe, emulator))
                except RuntimeError as exc:
                    notes.append(f"LiteLLM: skipped — {str(exc)[:400]}")
                else:
                    versions["litellm"] = version
                    found.append(Target("litellm", url, [pid], headers=LITELLM_AUTH))
        yield found, emulator_pids


def run(
    profile: Profile, tick: Callable[[str], None], versions: dict[str, str | None]
) -> dict[str, Any]:
    notes: list[str] = []
    cells: list[dict[str, Any]] = []
    event_cells: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        targets(profile, Path(tmp), notes, versions) as (found, emulator_pids),
        loadgen() as gen,
    ):
        for target in found:  # one request each: every target answers, and flex is flex
            check = measure(
                gen, target, emulator_pids, concurrency=1, requests=1, stream=False, max_seconds=30
            )
            if check["ok"] != 1:
                raise RuntimeError(f"{target.name} did not answer: {check['outcomes']}")
            if target.name == "flexroute-flex" and "flex" not in check["outcomes"]:
                raise RuntimeError(f"flexroute-flex was not routed to flex: {check['outcomes']}")
        for rnd in range(profile.rounds):
            for stream in (False, True):
                for c in profile.concurrency:
                    for target in found:
                        tick(
                            f"overhead r{rnd + 1} {'stream' if stream else 'json'} c{c} "
                            f"{target.name}"
                        )
                        cell = measure(
                            gen,
                            target,
                            emulator_pids,
                            concurrency=c,
                            requests=profile.requests[c],
                            stream=stream,
                            max_seconds=profile.max_seconds,
                        )
                        cells.append({"round": rnd, **cell})
            for tokens in (SHORT_TOKENS, LONG_TOKENS):
                for target in found:
                    if target.name == "litellm":
                        continue  # it does not pass x-emulator on, so streams stay short
                    tick(f"overhead r{rnd + 1} events tokens={tokens} {target.name}")
                    cell = measure(
                        gen,
                        target,
                        emulator_pids,
                        concurrency=16,
                        requests=profile.event_requests,
                        stream=True,
                        max_seconds=profile.max_seconds * 2,
                        headers={"x-emulator": f"tokens={tokens}"},
                    )
                    event_cells.append({"round": rnd, "tokens": tokens, **cell})
    return {
        "notes": notes,
        "cells": cells,
        "event_cells": event_cells,
        **aggregate(cells, event_cells, [t.name for t in found], profile),
    }


def _cell(cells: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [c for c in cells if all(c[k] == v for k, v in match.items())]


def aggregate(
    cells: list[dict[str, Any]],
    event_cells: list[dict[str, Any]],
    names: list[str],
    profile: Profile,
) -> dict[str, Any]:
    rows = []
    for stream in (False, True):
        for c in profile.concurrency:
            for name in names:
                added50, added99, p50, p99, tput = [], [], [], [], []
                for rnd in range(profile.rounds):
                    mine = _cell(cells, round=rnd, stream=stream, concurrency=c, target=name)
                    base = _cell(cells, round=rnd, stream=stream, concurrency=c, target="direct")
                    if not mine or not base or mine[0]["p50_ms"] is None:
                        continue
                    m, b = mine[0], base[0]
                    p50.append(m["p50_ms"])
                    p99.append(m["p99_ms"])
                    tput.append(m["throughput_rps"])
                    added50.append(m["p50_ms"] - b["p50_ms"])
                    added99.append(m["p99_ms"] - b["p99_ms"])
                rows.append(
                    {
                        "stream": stream,
                        "concurrency": c,
                        "target": name,
                        "p50_ms": spread(p50),
                        "p99_ms": spread(p99),
                        "added_p50_ms": spread(added50),
                        "added_p99_ms": spread(added99),
                        "throughput_rps": spread(tput),
                    }
                )
    cpu: dict[str, dict[str, Any]] = {}
    for stream in (False, True):
        for name in names:
            if name == "direct":
                continue
            per_round = []
            for rnd in range(profile.rounds):
                mine = _cell(cells, round=rnd, stream=stream, target=name)
                n = sum(m["served"] for m in mine)
                if n:
                    per_round.append(sum(m["cpu_s"] for m in mine) * 1000 / n)
            cpu.setdefault(name, {})["stream" if stream else "json"] = spread(per_round)
    per_event: dict[str, Any] = {}
    for name in names:
        values = []
        for rnd in range(profile.rounds):
            short = _cell(event_cells, round=rnd, target=name, tokens=SHORT_TOKENS)
            long = _cell(event_cells, round=rnd, target=name, tokens=LONG_TOKENS)
            if short and long and short[0]["cpu_s"] is not None and short[0]["requests"]:
                s, lg = short[0], long[0]
                extra = lg["cpu_s"] / lg["served"] - s["cpu_s"] / s["served"]
                values.append(extra * 1000 / (LONG_TOKENS - SHORT_TOKENS))
        if values:
            per_event[name] = spread(values)
    busy = [c["emulator_busy"] for c in cells if c["emulator_busy"] is not None]
    result = {
        "rows": rows,
        "cpu_ms_per_request": cpu,
        "cpu_ms_per_event": per_event,
        "emulator_busy_max": round(max(busy), 3) if busy else None,
        "emulator_workers": profile.emulator_workers,
    }
    result["ratios"] = ratios(result, profile)
    result["goals"] = goals(result, profile)
    return result


def _median(node: dict[str, Any] | None) -> float | None:
    return None if node is None else float(node["median"])


def _row(result: dict[str, Any], stream: bool, c: int, target: str) -> dict[str, Any] | None:
    for row in result["rows"]:
        if (row["stream"], row["concurrency"], row["target"]) == (stream, c, target):
            found: dict[str, Any] = row
            return found
    return None


def ratios(result: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Each proxy's CPU/request, added p50 and top throughput against direct, floor and LiteLLM."""
    out: dict[str, Any] = {}
    top = max(profile.concurrency)
    for stream in (False, True):
        mode = "stream" if stream else "json"
        cpu = {k: _median(v.get(mode)) for k, v in result["cpu_ms_per_request"].items()}
        names = [
            r["target"] for r in result["rows"] if r["stream"] == stream and r["concurrency"] == top
        ]
        tput = {
            n: _median((_row(result, stream, top, n) or {}).get("throughput_rps")) for n in names
        }
        added = {
            n: _median((_row(result, stream, top, n) or {}).get("added_p50_ms")) for n in names
        }
        for name in names:
            if name == "direct":
                continue
            out.setdefault(name, {})[mode] = {
                "cpu_vs_floor": ratio(cpu.get(name), cpu.get("floor")),
                "cpu_vs_litellm": ratio(cpu.get(name), cpu.get("litellm")),
                "throughput_vs_direct": ratio(tput.get(name), tput.get("direct")),
                "throughput_vs_floor": ratio(tput.get(name), tput.get("floor")),
                "throughput_vs_litellm": ratio(tput.get(name), tput.get("litellm")),
                f"added_p50_c{top}_vs_floor": ratio(added.get(name), added.get("floor")),
                f"added_p50_c{top}_vs_litellm": ratio(added.get(name), added.get("litellm")),
            }
    return out


def goals(result: dict[str, Any], profile: Profile) -> list[dict[str, Any]]:
    """The issue's goals, pass or fail (reported, never asserted)."""
    out = []
    r = result["ratios"]
    # issue 12: passthrough ≤ 1.25× the floor, flex that starts (stream, commit, assemble) ≤ 1.6×
    for name, limit in (("flexroute", 1.25), ("flexroute-flex", 1.6)):
        value = r.get(name, {}).get("json", {}).get("cpu_vs_floor")
        out.append(
            {
                "goal": f"{name} CPU/request ≤ {limit:g}× floor",
                "value": value,
                "passed": None if value is None else value <= limit,
            }
        )
    for name in ("flexroute", "flexroute-flex"):
        event = _median(result["cpu_ms_per_event"].get(name))
        out.append(
            {
                "goal": f"{name} CPU per streamed event ≤ 0.05 ms",
                "value": event,
                "passed": None if event is None else event <= 0.05,
            }
        )
    top = max(profile.concurrency)
    one = _median((_row(result, False, top, "flexroute") or {}).get("throughput_rps"))
    two = _median((_row(result, False, top, "flexroute-2w") or {}).get("throughput_rps"))
    value = ratio(two, one)
    out.append(
        {
            "goal": f"flexroute --workers 2 throughput at {top} ≥ 1.7× one worker's",
            "value": value,
            "passed": None if value is None else value >= 1.7,
        }
    )
    for name in ("flexroute", "flexroute-flex"):
        value = r.get(name, {}).get("json", {}).get("throughput_vs_floor")
        out.append(
            {
                "goal": f"{name} throughput at {top} ≥ 0.9× floor",
                "value": value,
                "passed": None if value is None else value >= 0.9,
            }
        )
    return out

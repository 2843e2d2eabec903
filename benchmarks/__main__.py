"""Run every benchmark: ``python -m benchmarks [--quick | --smoke] [--only NAMES]``.

Prints a summary table, writes JSON (each with the machine it ran on) and PNG plots to
``benchmarks/results/``, and refreshes the table between the result markers of
``benchmarks/README.md``. ``--quick`` takes about a minute or two; ``--smoke`` (for CI) well
under one and runs without peers. ``--install-litellm`` sets up the LiteLLM peer's own venv.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks import _plots, _report, batch, fallback_lag, memory, overhead, peers, savings
from benchmarks._stats import machine

HERE = Path(__file__).parent
BENCHMARKS = ("fallback", "overhead", "savings", "memory", "sdk", "batch")


@dataclass(frozen=True)
class Mode:
    name: str
    fallback_levels: list[int]
    fallback_runs: int
    fallback_budget: float
    fallback_arrivals: list[str]
    overhead: overhead.Profile
    savings: savings.Profile
    memory: memory.Profile
    sdk_calls: tuple[int, int]  # calls, warm-up
    batch: batch.Profile


MODES = {
    "full": Mode(
        "full",
        [1, 100, 500, 1000],
        3,
        1.0,
        ["spread", "burst"],
        overhead.FULL,
        savings.FULL,
        memory.FULL,
        (400, 50),
        batch.FULL,
    ),
    "quick": Mode(
        "quick",
        [1, 100, 500, 1000],
        1,
        1.0,
        ["burst"],
        overhead.QUICK,
        savings.QUICK,
        memory.QUICK,
        (100, 20),
        batch.QUICK,
    ),
    "smoke": Mode(
        "smoke",
        [1, 20],
        1,
        0.3,
        ["burst"],
        overhead.SMOKE,
        savings.SMOKE,
        memory.SMOKE,
        (10, 3),
        batch.SMOKE,
    ),
}


@contextlib.contextmanager
def guarded(name: str, notes: list[str]) -> Iterator[None]:
    """A benchmark that fails leaves a note and lets the others run (the exit code says so)."""
    try:
        yield
    except Exception as exc:  # any failure is reported, then the run goes on
        notes.append(f"{name}: failed — {type(exc).__name__}: {str(exc)[:300]}")


@contextlib.contextmanager
def progress(label: str) -> Iterator[Callable[[str], None]]:
    """A progress bar for one benchmark; the callable advances it with a step's name."""
    with tqdm(desc=label, unit="step", file=sys.stderr, dynamic_ncols=True, leave=True) as bar:

        def tick(step: str) -> None:
            bar.set_postfix_str(step, refresh=False)
            bar.update(1)

        yield tick


def run_sdk(calls: tuple[int, int], results: Path, notes: list[str]) -> dict[str, Any] | None:
    """``benchmarks/sdk_overhead.py`` (the SDK wrapper's own benchmark) when it exists."""
    if not (HERE / "sdk_overhead.py").exists():
        notes.append("SDK wrapper overhead: skipped — benchmarks/sdk_overhead.py is not there yet")
        return None
    out = results / "sdk_overhead.json"
    code = (
        "import pathlib, sys; import benchmarks.sdk_overhead as m; "
        "m.RESULTS = pathlib.Path(sys.argv[1]); "
        "sys.argv = ['sdk_overhead', '--calls', sys.argv[2], '--warmup', sys.argv[3]]; m.main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out), str(calls[0]), str(calls[1])],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=HERE.parent,
    )
    if done.returncode != 0 or not out.exists():
        notes.append(f"SDK wrapper overhead: failed — {done.stderr.strip()[-400:]}")
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about a minute or two")
    size.add_argument("--smoke", action="store_true", help="CI: well under a minute, no peers")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated subset of {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    parser.add_argument(
        "--install-litellm",
        action="store_true",
        help="install litellm[proxy] into its own venv, then exit",
    )
    args = parser.parse_args(argv)
    if args.install_litellm:
        return peers.install_litellm()
    mode = MODES["smoke" if args.smoke else "quick" if args.quick else "full"]
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = only - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    args.results.mkdir(parents=True, exist_ok=True)
    versions: dict[str, str | None] = {}
    notes: list[str] = []
    results: dict[str, Any] = {"mode": mode.name}
    began = time.monotonic()
    if "fallback" in only:
        with guarded("fallback precision", notes), progress("fallback precision") as tick:
            results["fallback"] = fallback_lag.run(
                mode.fallback_levels,
                mode.fallback_runs,
                mode.fallback_budget,
                mode.fallback_arrivals,
                tick,
            )
    if "overhead" in only:
        with guarded("overhead", notes), progress("overhead vs peers") as tick:
            results["overhead"] = overhead.run(mode.overhead, tick, versions)
    if "overhead" in results:
        notes += results["overhead"]["notes"]
        busy = results["overhead"]["emulator_busy_max"] or 0.0
        notes.append(
            f"Emulator: {mode.overhead.emulator_workers} fast-mode worker(s); busiest cell used "
            f"{busy:.0%} of their CPU"
            + (" — it may have been a bottleneck there" if busy and busy > 0.8 else "")
        )
    if "savings" in only:
        with guarded("savings", notes), progress("savings vs oracle") as tick:
            results["savings"] = savings.run(mode.savings, tick)
        if "savings" in results:
            notes += results["savings"]["notes"]
    if "memory" in only:
        with guarded("memory", notes), progress("memory") as tick:
            results["memory"] = memory.run(mode.memory, tick)
    if "batch" in only:
        with guarded("batch", notes), progress("flexroute batch") as tick:
            results["batch"] = batch.run(mode.batch, tick)
    if "sdk" in only:
        sdk = run_sdk(mode.sdk_calls, args.results, notes)
        if sdk is not None:
            results["sdk"] = sdk
    failed = [n for n in notes if ": failed" in n]
    results["machine"] = machine(versions)
    results["finished_at"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    code = write(results, notes, args)
    return 1 if failed else code


def write(results: dict[str, Any], notes: list[str], args: argparse.Namespace) -> int:
    out: Path = args.results
    files = {
        "fallback": "fallback_lag",
        "overhead": "overhead",
        "savings": "savings",
        "memory": "memory",
        "batch": "batch",
    }
    plots = []
    for key, stem in files.items():
        if key not in results:
            continue
        (out / f"{stem}.json").write_text(
            json.dumps(
                {
                    "machine": results["machine"],
                    "mode": results["mode"],
                    "finished_at": results["finished_at"],
                    **results[key],
                },
                indent=2,
            )
            + "\n"
        )
        png = out / f"{stem}.png"
        getattr(_plots, key)(results[key], png)
        plots.append(str(png))
    summary = []
    for title, header, rows in _report.tables(results):
        summary += [f"\n{title}", _report.text_table(header, rows)]
    text = "\n".join([*(f"note: {n}" for n in notes), *summary])
    (out / "summary.txt").write_text(text + "\n")
    print(text)
    print(
        f"\nwrote {', '.join(sorted(p.name for p in out.glob('*.json')))} and "
        f"{len(plots)} plot(s) to {out} in {results['elapsed_s']} s"
    )
    if not args.no_readme:
        _report.refresh_readme(args.readme, _report.markdown(results, notes, plots))
        print(f"refreshed the results table in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

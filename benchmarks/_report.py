"""The summary table, the README refresh and the plots, from the harness's results."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _m(node: dict[str, Any] | None, digits: int = 2) -> str:
    """``median (min–max)`` of a spread, or ``—``."""
    if node is None:
        return "—"
    med, lo, hi = node["median"], node["min"], node["max"]
    if node.get("runs", 1) == 1 or lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def _med(node: dict[str, Any] | None, digits: int = 2) -> str:
    """The median of a spread alone, or ``—``."""
    return "—" if node is None else f"{node['median']:.{digits}f}"


def _pair(row: dict[str, Any], key: str, digits: int = 2) -> str:
    """``always / adaptive`` medians of one figure of a savings row."""
    return f"{_med(row['always'][key], digits)} / {_med(row['adaptive'][key], digits)}"


def _ok(passed: bool | None) -> str:
    return "n/a" if passed is None else "pass" if passed else "FAIL"


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every benchmark present in ``results``."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    fallback = results.get("fallback")
    if fallback:
        rows = [
            [
                r["arrival"],
                str(r["concurrency"]),
                *(_m(r["standard_sent_lag_ms"][q], 1) for q in ("p50", "p99", "max")),
                *(_m(r["flex_closed_lag_ms"][q], 1) for q in ("p50", "p99", "max")),
            ]
            for r in fallback["rows"]
        ]
        out.append(
            (
                "Fallback precision (lag after the deadline, ms)",
                [
                    "arrival",
                    "in flight",
                    "standard sent p50",
                    "p99",
                    "max",
                    "flex closed p50",
                    "p99",
                    "max",
                ],
                rows,
            )
        )
    overhead = results.get("overhead")
    if overhead:
        rows = [
            [
                "stream" if r["stream"] else "json",
                str(r["concurrency"]),
                r["target"],
                _m(r["p50_ms"]),
                _m(r["p99_ms"]),
                _m(r["added_p50_ms"]),
                _m(r["added_p99_ms"]),
                _m(r["throughput_rps"], 0),
            ]
            for r in overhead["rows"]
        ]
        out.append(
            (
                "Overhead against peers (latency: streams are time to first byte)",
                [
                    "mode",
                    "conc.",
                    "target",
                    "p50 ms",
                    "p99 ms",
                    "added p50 ms",
                    "added p99 ms",
                    "req/s",
                ],
                rows,
            )
        )
        rows = []
        for name, modes in overhead["cpu_ms_per_request"].items():
            rat = overhead["ratios"].get(name, {})
            rows.append(
                [
                    name,
                    _m(modes.get("json")),
                    _m(modes.get("stream")),
                    _m(overhead["cpu_ms_per_event"].get(name), 4),
                    _r(rat.get("json", {}).get("cpu_vs_floor")),
                    _r(rat.get("json", {}).get("cpu_vs_litellm")),
                    _r(rat.get("json", {}).get("throughput_vs_direct")),
                    _r(rat.get("json", {}).get("throughput_vs_floor")),
                    _r(rat.get("json", {}).get("throughput_vs_litellm")),
                ]
            )
        out.append(
            (
                "CPU per request of each proxy process, and ratios (json, top concurrency)",
                [
                    "proxy",
                    "CPU ms/req json",
                    "CPU ms/req stream",
                    "CPU ms/event",
                    "CPU ×floor",
                    "CPU ×LiteLLM",
                    "req/s ×direct",
                    "req/s ×floor",
                    "req/s ×LiteLLM",
                ],
                rows,
            )
        )
    savings = results.get("savings")
    if savings:
        rows = [
            [
                r["scenario"],
                f"{r['budget_s']:g}",
                _med(r["oracle_sent_share"]),
                _pair(r, "sent_flex_share"),
                _pair(r, "saving_vs_oracle", 3),
                _pair(r, "saving_vs_ceiling", 3),
                _med(r["oracle_wait_p50_ms"], 0) + " / " + _pair(r, "added_wait_p50_ms", 0),
                _med(r["oracle_wait_p99_ms"], 0) + " / " + _pair(r, "added_wait_p99_ms", 0),
                _pair(r, "wait_p99_vs_oracle", 1),
                _med(r.get("knowing_vs_oracle"), 3)
                + " / "
                + _med(r.get("knowing_wait_mean_ms"), 0),
            ]
            for r in savings["rows"]
        ]
        out.append(
            (
                "Savings against an oracle (always / adaptive; medians over seeds)",
                [
                    "trace",
                    "start_within s",
                    "oracle sends to flex",
                    "sent to flex",
                    "saving ÷ oracle",
                    "saving ÷ ceiling",
                    "added wait p50 ms oracle / always / adaptive",
                    "p99 ms oracle / always / adaptive",
                    "p99 ÷ oracle's",
                    "state-knowing: saving ÷ oracle / mean wait ms",
                ],
                rows,
            )
        )
    memory = results.get("memory")
    if memory:
        m = memory
        out.append(
            (
                "Memory (RSS of the proxy)",
                [
                    "idle MiB",
                    f"{m['waiting']} waiting MiB",
                    "KiB per waiting",
                    "after MiB",
                    f"growth over {m['requests']} MiB",
                ],
                [
                    [
                        f"{m['idle_mib']:.1f}",
                        f"{m['waiting_mib']:.1f}",
                        f"{m['per_waiting_kib']:.1f}",
                        f"{m['after_mib']:.1f}",
                        f"{m['growth_mib']:.2f}",
                    ]
                ],
            )
        )
    batch = results.get("batch")
    if batch:
        rows = [
            [
                r["scenario"],
                str(r["lines"]),
                str(r["concurrency"]),
                f"{r['wall_s']:.1f}",
                f"{r['lines_per_s']:.0f}",
                f"{r['cpu_ms_per_line']:.2f}",
                _r(r.get("batch_vs_direct")),
                f"{r['served_flex_share']:.2f}",
                "—" if r["saving_vs_oracle"] is None else f"{r['saving_vs_oracle']:.3f}",
                f"{r['window_vs_wall']:,.0f}×",
            ]
            for r in batch["rows"]
        ]
        out.append(
            (
                "flexroute batch (engine in process, SQLite ledger, fast emulator)",
                [
                    "scenario",
                    "lines",
                    "conc.",
                    "wall s",
                    "lines/s",
                    "CPU ms/line",
                    "wall ×direct",
                    "served flex",
                    "saving ÷ oracle",
                    "24 h window ÷ wall",
                ],
                rows,
            )
        )
    sdk = results.get("sdk")
    if sdk:
        rows = [
            [
                r["case"],
                f"{r['bare_ms']['p50']:.3f}",
                f"{r['wrapped_ms']['p50']:.3f}",
                f"{r['added_ms_p50']:.3f}",
                f"{r['ratio_p50']:.2f}",
                f"{r['ratio_p99']:.2f}",
            ]
            for r in sdk["rows"]
        ]
        out.append(
            (
                "SDK wrapper overhead",
                ["case", "bare p50 ms", "wrapped p50 ms", "added p50 ms", "ratio p50", "ratio p99"],
                rows,
            )
        )
    goals = [
        g for part in results.values() if isinstance(part, dict) for g in part.get("goals", [])
    ]
    if goals:
        out.append(
            (
                "Goals (reported, not asserted)",
                ["goal", "value", "result"],
                [
                    [
                        g["goal"],
                        "—" if g["value"] is None else f"{g['value']:.3f}",
                        _ok(g["passed"]),
                    ]
                    for g in goals
                ],
            )
        )
    return out


def _r(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any], notes: list[str], plots: list[str]) -> str:
    machine = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    parts = [
        f"Measured {results['finished_at']} ({results['mode']} mode) on {machine['cores']} cores, "
        f"Python {machine['python']}, {versions}; load average at start "
        f"{machine['load_average']}. Figures are medians over runs with (min–max).",
    ]
    parts += [f"- {note}" for note in notes]
    for title, header, rows in tables(results):
        parts += [f"**{title}**", markdown_table(header, rows)]
    parts += [f"![{Path(p).stem}](results/{Path(p).name})" for p in plots]
    return "\n\n".join(parts)


def refresh_readme(readme: Path, block: str) -> None:
    """Replace what lies between the result markers of ``readme`` with ``block``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Latest results\n\n{BEGIN}\n{END}\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    readme.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text))

"""PNG plots of the harness's results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _err(nodes: list[dict[str, Any] | None]) -> tuple[list[float], list[list[float]]]:
    med = [n["median"] if n else float("nan") for n in nodes]
    low = [n["median"] - n["min"] if n else 0.0 for n in nodes]
    high = [n["max"] - n["median"] if n else 0.0 for n in nodes]
    return med, [low, high]


def fallback(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for arrival in ("spread", "burst"):
        rows = [r for r in result["rows"] if r["arrival"] == arrival]
        xs = [r["concurrency"] for r in rows]
        med, err = _err([r["standard_sent_lag_ms"]["p99"] for r in rows])
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=f"{arrival}: p99")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("requests in flight")
    ax.set_ylabel("standard request sent, ms after the deadline")
    ax.set_title("Fallback precision")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def overhead(result: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [n for n in dict.fromkeys(r["target"] for r in result["rows"]) if n != "direct"]
    concurrency = sorted({r["concurrency"] for r in result["rows"]})
    width = 0.8 / max(1, len(names))
    for panel, stream in ((0, False), (1, True)):
        ax = axes[panel]
        for i, name in enumerate(names):
            rows = [r for r in result["rows"] if r["target"] == name and r["stream"] == stream]
            med, err = _err([r["added_p50_ms"] for r in rows])
            xs = [k + i * width for k in range(len(rows))]
            ax.bar(xs, med, width, yerr=err, capsize=2, label=name)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(concurrency))])
        ax.set_xticklabels([str(c) for c in concurrency])
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("concurrency")
        ax.set_ylabel("added latency p50, ms" + (" (time to first byte)" if stream else ""))
        ax.set_title("streaming" if stream else "non-streaming")
        ax.legend(fontsize=8)
    ax = axes[2]
    cpu = result["cpu_ms_per_request"]
    med, err = _err([cpu[n].get("json") for n in names])
    ax.bar(names, med, yerr=err, capsize=3)
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms per request (json)")
    ax.set_title("CPU per request of the proxy process")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def savings(result: dict[str, Any], path: Path) -> None:
    """Per trace: saving ÷ ceiling (top) and added wait p99 (bottom) against start_within, for
    the oracle and both flex modes."""
    traces = list(dict.fromkeys(r["scenario"] for r in result["rows"]))
    fig, axes = plt.subplots(2, len(traces), figsize=(3.6 * len(traces), 7), squeeze=False)
    styles = {"oracle": ("k", ":", "s"), "always": ("C0", "-", "o"), "adaptive": ("C3", "--", "x")}
    for column, trace in enumerate(traces):
        rows = sorted(
            (r for r in result["rows"] if r["scenario"] == trace), key=lambda r: r["budget_s"]
        )
        xs = [r["budget_s"] for r in rows]
        top, bottom = axes[0][column], axes[1][column]
        lines = {
            "oracle": (
                [r.get("oracle_vs_ceiling") for r in rows],
                [r["oracle_wait_p99_ms"] for r in rows],
            ),
            **{
                mode: (
                    [r[mode]["saving_vs_ceiling"] for r in rows],
                    [r[mode]["added_wait_p99_ms"] for r in rows],
                )
                for mode in ("always", "adaptive")
            },
        }
        for name, (saving, wait) in lines.items():
            color, style, marker = styles[name]
            for ax, nodes in ((top, saving), (bottom, wait)):
                med, err = _err(nodes)
                ax.errorbar(
                    xs, med, yerr=err, color=color, linestyle=style, marker=marker, capsize=3,
                    label=name,
                )  # fmt: skip
        top.set_title(trace)
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xlabel("start_within, s")
        top.set_ylim(bottom=0)
        if column == 0:
            top.set_ylabel("saving ÷ all-flex ceiling")
            bottom.set_ylabel("added wait p99, ms")
            top.legend(fontsize=8)
    fig.suptitle("Saving and added wait against start_within: oracle, always, adaptive")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def memory(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    readings = result["readings_mib"]
    step = result["requests"] / len(readings)
    ax.plot([step * (i + 1) for i in range(len(readings))], readings, marker="o")
    ax.axhline(result["idle_mib"], linestyle=":", label="idle")
    ax.axhline(result["waiting_mib"], linestyle="--", label=f"{result['waiting']} waiting")
    ax.set_xlabel("requests served")
    ax.set_ylabel("proxy RSS, MiB")
    ax.set_title("Memory")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def batch(result: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = result["rows"]
    names = [f"{r['scenario']} ({r['lines']})" for r in rows]
    ax.bar(names, [r["lines_per_s"] for r in rows])
    for i, r in enumerate(rows):
        share = "—" if r["saving_vs_oracle"] is None else f"{r['saving_vs_oracle']:.3f}"
        ax.annotate(f"saving ÷ oracle {share}", (i, r["lines_per_s"]), ha="center", va="bottom")
    ax.set_ylabel("lines per second")
    ax.set_title("flexroute batch against the emulator")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""What a batch run did: counts and money from each answer's ``x-flexroute-*`` headers, the
progress bar while it runs, the summary table (or JSON) at the end.

The figures are read from the headers the engine puts on every answer (SPEC §5), so they are
the ledger's own, the same whether the engine ran here or behind ``--via``. Lines skipped on
``--resume`` are counted as ``skipped``, not again as requests.

The bar (tqdm, on stderr) shows done/total, rate and ETA, plus the flex share and saving so
far; it is off when stderr is not a terminal (then nothing is drawn at all).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TextIO

from tqdm import tqdm

from flexroute.money import ZERO, format_usd
from flexroute.table import render_table

__all__ = ["Progress", "Tally"]

_MONEY = {
    "cost": "x-flexroute-cost-usd",
    "standard_cost": "x-flexroute-standard-cost-usd",
    "saving": "x-flexroute-saving-usd",
    "fee": "x-flexroute-fee-usd",
}


@dataclass
class Tally:
    total: int = 0  # lines in the input (blank lines aside)
    skipped: int = 0  # already in the output (--resume)
    requests: int = 0  # lines answered this run (an HTTP answer of any status)
    served_flex: int = 0
    fallbacks: int = 0
    passthrough: int = 0
    errors: int = 0  # a non-2xx answer or none at all
    no_answer: int = 0  # no HTTP answer at all (counted in errors too)
    bad_lines: int = 0
    retries: int = 0  # 429/5xx answers retried after a pause
    unpriced: int = 0  # answers without both costs (an unpriced model, no usage)
    money: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(_MONEY, ZERO))
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def done(self) -> int:
        return self.skipped + self.requests + self.bad_lines + self.no_answer

    def answered(self, status: int, headers: dict[str, str]) -> None:
        self.requests += 1
        if not 200 <= status < 300:
            self.errors += 1
        route = headers.get("x-flexroute-route")
        if route == "fallback":
            self.fallbacks += 1
        elif route == "passthrough":
            self.passthrough += 1
        if headers.get("x-flexroute-tier") == "flex":
            self.served_flex += 1
        if all(header in headers for header in _MONEY.values()):
            for name, header in _MONEY.items():
                self.money[name] += Decimal(headers[header])
        elif 200 <= status < 300:
            self.unpriced += 1

    def unanswered(self) -> None:
        self.no_answer += 1
        self.errors += 1

    def finish(self) -> None:
        if self.finished is None:
            self.finished = time.monotonic()

    def wall_seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def flex_share(self) -> float:
        return self.served_flex / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "total_lines": self.total,
            "skipped": self.skipped,
            "requests": self.requests,
            "served_flex": self.served_flex,
            "fallbacks": self.fallbacks,
            "passthrough": self.passthrough,
            "errors": self.errors,
            "bad_lines": self.bad_lines,
            "no_answer": self.no_answer,
            "retries": self.retries,
            "unpriced": self.unpriced,
            **{f"{name}_usd": format_usd(value) for name, value in self.money.items()},
            "wall_seconds": round(self.wall_seconds(), 3),
        }

    def table(self) -> str:
        m = self.money
        rows = [
            ("requests", str(self.requests)),
            ("served at flex", f"{self.served_flex} ({self.flex_share():.0%})"),
            ("fallbacks", str(self.fallbacks)),
            ("passthrough", str(self.passthrough)),
            ("errors", str(self.errors)),
            ("bad lines", str(self.bad_lines)),
            ("skipped (resume)", str(self.skipped)),
            ("retries after 429/5xx", str(self.retries)),
            ("cost", f"${format_usd(m['cost'])}"),
            ("standard cost", f"${format_usd(m['standard_cost'])}"),
            ("saving", f"${format_usd(m['saving'])}"),
            ("fee", f"${format_usd(m['fee'])}"),
            ("wall time", f"{self.wall_seconds():.1f} s"),
        ]
        return render_table(["batch", "value"], [list(r) for r in rows], align="lr")


class Progress:
    """The tqdm bar on ``stream`` (stderr), or nothing when it is not a terminal."""

    def __init__(self, tally: Tally, *, enabled: bool | None = None, stream: TextIO | None = None):
        self.tally = tally
        self.out = out = stream or sys.stderr
        show = out.isatty() if enabled is None else enabled
        self.bar: tqdm[Any] | None = (
            tqdm(
                total=tally.total,
                initial=tally.done,
                unit="req",
                file=out,
                dynamic_ncols=True,
                mininterval=0.2,
                smoothing=0.1,
            )
            if show
            else None
        )

    def note(self, message: str) -> None:
        """A line for the user (a bad input line), above the bar when there is one."""
        text = f"flexroute batch: {message}"
        if self.bar is None:
            print(text, file=self.out, flush=True)
        else:
            self.bar.write(text, file=self.out)

    def update(self) -> None:
        if self.bar is None:
            return
        self.bar.n = self.tally.done
        self.bar.set_postfix_str(
            f"flex {self.tally.flex_share():.0%} saved ${self.tally.money['saving']:.4f}",
            refresh=False,
        )
        self.bar.update(0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.n = self.tally.done
            self.bar.close()

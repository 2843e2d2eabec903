"""In-process counters, rendered as Prometheus text at ``GET /metrics``. Never holds secrets."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from flexroute.ledger.base import LedgerRecord


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.saving: dict[str, Decimal] = {}
        self.fee: dict[str, Decimal] = {}
        self.flex_wait_ms_sum = 0
        self.flex_wait_count = 0
        self.events: Counter[str] = Counter()

    def count(self, event: str) -> None:
        """One more of a gateway event (see ``EVENTS``)."""
        self.events[event] += 1

    def observe(self, record: LedgerRecord) -> None:
        self.requests[(record.provider, record.route, record.status)] += 1
        self.saving[record.provider] = self.saving.get(record.provider, Decimal(0)) + record.saving
        self.fee[record.provider] = self.fee.get(record.provider, Decimal(0)) + record.fee
        if record.flex_wait_ms is not None:
            self.flex_wait_ms_sum += record.flex_wait_ms
            self.flex_wait_count += 1

    def render(self, gauges: dict[str, tuple[str, int]] | None = None) -> str:
        """Prometheus text; ``gauges`` adds ``flexroute_<name>`` gauges (help, value)."""
        lines = [
            "# HELP flexroute_requests_total Requests that reached a provider.",
            "# TYPE flexroute_requests_total counter",
        ]
        for (provider, route, status), count in sorted(self.requests.items()):
            labels = f'provider="{provider}",route="{route}",status="{status}"'
            lines.append(f"flexroute_requests_total{{{labels}}} {count}")
        for name, values, help_text in (
            ("flexroute_saving_usd_total", self.saving, "Saving against the standard price."),
            ("flexroute_fee_usd_total", self.fee, "Fees computed (20% of the saving)."),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            lines += [f'{name}{{provider="{p}"}} {v}' for p, v in sorted(values.items())]
        lines += [
            "# HELP flexroute_flex_wait_ms Time from receipt to flex start or fallback.",
            "# TYPE flexroute_flex_wait_ms summary",
            f"flexroute_flex_wait_ms_sum {self.flex_wait_ms_sum}",
            f"flexroute_flex_wait_ms_count {self.flex_wait_count}",
        ]
        for event, help_text in EVENTS.items():
            name = f"flexroute_{event}_total"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            lines.append(f"{name} {self.events[event]}")
        for gauge, (help_text, value) in (gauges or {}).items():
            name = f"flexroute_{gauge}"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


EVENTS = {
    "unauthorized": "Requests refused for a missing, unknown or revoked flexroute key.",
    "ratelimited": "Requests refused over a flexroute key's rate limit.",
    "ratelimit_fallback": "Rate-limit checks made in-process because Redis was unreachable.",
}

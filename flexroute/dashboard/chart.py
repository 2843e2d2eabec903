"""The Overview's charts as geometry: the template draws inline SVG from these numbers, so
the chart is server-rendered, needs no script and is escaped like every other value.

Two charts share the days' axis: requests per day as bars stacked by route, and provider
spend, saving and fee per day as lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from flexroute.dashboard.queries import ROUTES, Group

WIDTH, HEIGHT, PAD = 720, 180, 28


@dataclass(frozen=True, slots=True)
class Bar:
    day: str
    route: str
    x: float
    y: float
    width: float
    height: float
    requests: int


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    points: str  # SVG polyline points "x,y x,y …"
    last: Decimal


@dataclass(frozen=True, slots=True)
class Charts:
    width: int
    height: int
    bars: list[Bar]
    lines: list[Line]
    max_requests: int
    max_usd: Decimal
    first_day: str
    last_day: str


def charts(days: list[Group]) -> Charts:
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    step = inner_w / max(1, len(days))
    most = max((d.requests for d in days), default=0) or 1
    bars = []
    for n, day in enumerate(days):
        base = float(HEIGHT - PAD)
        for route in ROUTES:
            count = day.by_route.get(route, 0)
            if count == 0:
                continue
            height = inner_h * count / most
            base -= height
            x = PAD + n * step + step * 0.15
            bars.append(
                Bar(
                    day.name,
                    route,
                    round(x, 1),
                    round(base, 1),
                    round(step * 0.7, 1),
                    round(height, 1),
                    count,
                )
            )
    top = max((max(d.spend, d.saving, d.fee) for d in days), default=Decimal(0))
    scale = top if top > 0 else Decimal(1)
    lines = []
    for name in ("spend", "saving", "fee"):
        points = []
        for n, day in enumerate(days):
            value: Decimal = getattr(day, name)
            x = PAD + n * step + step / 2
            y = HEIGHT - PAD - float(value / scale) * inner_h
            points.append(f"{x:.1f},{y:.1f}")
        last = getattr(days[-1], name) if days else Decimal(0)
        lines.append(Line(name, " ".join(points), last))
    return Charts(
        WIDTH,
        HEIGHT,
        bars,
        lines,
        most if any(d.requests for d in days) else 0,
        top,
        days[0].name if days else "",
        days[-1].name if days else "",
    )

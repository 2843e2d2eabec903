"""What the pages show, read from the store and shaped for the templates: plain frozen
dataclasses, money as ``Decimal`` (the templates format it), nothing about HTML."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from flexroute.ledger import Invoice, LedgerRecord, Org, Store, UsageRow
from flexroute.ledger.keys import ApiKey
from flexroute.ledger.quota import Caps, Totals, month_start, next_month
from flexroute.money import ZERO

ROUTES = ("flex", "fallback", "passthrough")
CHART_DAYS = 30


@dataclass(frozen=True, slots=True)
class Group:
    """Totals of one day, model or route."""

    name: str
    requests: int = 0
    spend: Decimal = ZERO
    standard: Decimal = ZERO
    saving: Decimal = ZERO
    fee: Decimal = ZERO
    by_route: dict[str, int] = field(default_factory=dict)

    def plus(self, row: UsageRow) -> Group:
        routes = dict(self.by_route)
        routes[row.route] = routes.get(row.route, 0) + row.requests
        return Group(
            self.name,
            self.requests + row.requests,
            self.spend + row.cost,
            self.standard + row.standard_cost,
            self.saving + row.saving,
            self.fee + row.fee,
            routes,
        )

    @property
    def flex_share(self) -> Decimal | None:
        """The share of requests served at flex (route ``flex``)."""
        if self.requests == 0:
            return None
        return Decimal(self.by_route.get("flex", 0)) / Decimal(self.requests)


@dataclass(frozen=True, slots=True)
class Overview:
    days: list[Group]  # the last CHART_DAYS days, oldest first, empty days included
    models: list[Group]
    routes: list[Group]
    total: Group
    month: Totals  # this month (UTC) so far
    caps: Caps
    resets: dt.datetime


async def overview(store: Store, org_id: str, now: dt.datetime) -> Overview:
    start = (now - dt.timedelta(days=CHART_DAYS - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    rows = await store.usage(org_id, start)
    days = {
        (start + dt.timedelta(days=n)).date().isoformat(): Group(
            (start + dt.timedelta(days=n)).date().isoformat()
        )
        for n in range(CHART_DAYS)
    }
    models: dict[str, Group] = {}
    routes: dict[str, Group] = {}
    total = Group("total")
    for row in rows:
        if row.day in days:
            days[row.day] = days[row.day].plus(row)
        model = row.model or "(none)"
        models[model] = models.get(model, Group(model)).plus(row)
        routes[row.route] = routes.get(row.route, Group(row.route)).plus(row)
        total = total.plus(row)
    month = month_start(now)
    org_totals, _ = await store.month_totals(org_id, None, month)
    org_caps, _ = await store.caps(org_id, None)
    return Overview(
        days=[days[d] for d in sorted(days)],
        models=sorted(models.values(), key=lambda g: (-g.requests, g.name)),
        routes=sorted(routes.values(), key=lambda g: (-g.requests, g.name)),
        total=total,
        month=org_totals,
        caps=org_caps,
        resets=next_month(now),
    )


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: ApiKey
    caps: Caps
    month: Totals


async def key_rows(store: Store, org_id: str, now: dt.datetime) -> list[KeyRow]:
    out = []
    months = await store.key_months(org_id, month_start(now))
    for key in await store.keys(org_id):
        _, caps = await store.caps(org_id, key.key_id)
        out.append(KeyRow(key, caps, months.get(key.key_id, Totals())))  # no records yet: zero
    return out


@dataclass(frozen=True, slots=True)
class Billing:
    org: Org
    invoices: list[Invoice]  # newest first


async def billing(store: Store, org_id: str) -> Billing:
    invoices = await store.invoices(org_id)
    return Billing(await store.org(org_id), list(reversed(invoices)))


@dataclass(frozen=True, slots=True)
class OrgRow:
    org: Org
    caps: Caps
    month: Totals
    keys: int


async def every_org(store: Store, now: dt.datetime) -> list[OrgRow]:
    """The operator's table: each organisation with billing state, records or keys."""
    keys: dict[str, int] = defaultdict(int)
    for key in await store.keys():
        keys[key.org_id] += 0 if key.revoked else 1
    out = []
    since = month_start(now)
    for org_id in sorted(set(await store.org_ids()) | set(keys)):
        caps, _ = await store.caps(org_id, None)
        month, _ = await store.month_totals(org_id, None, since)
        out.append(OrgRow(await store.org(org_id), caps, month, keys[org_id]))
    return out


async def one_request(store: Store, org_id: str, request_id: str) -> LedgerRecord | None:
    """The record, only if it is this organisation's (another's id reads as unknown)."""
    record = await store.get(request_id)
    return record if record is not None and record.org_id == org_id else None

"""The record and the store interface; backends live beside this module."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from flexroute.errors import ConfigError
from flexroute.money import format_usd
from flexroute.usage import Usage

DEFAULT_ORG = "default"


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One request's outcome (SPEC §4). Money is Decimal USD; costs are None when unpriced."""

    request_id: str
    provider: str
    endpoint: str
    model: str | None
    route: str
    reason: str | None
    tier_requested: str | None
    tier_served: str | None
    start_within_ms: int | None
    flex_wait_ms: int | None
    attempts: int
    usage: Usage | None
    standard_cost: Decimal | None
    actual_cost: Decimal | None
    saving: Decimal
    fee: Decimal
    status: str  # "ok" | "error" | "stream_broken" | "client_closed"
    http_status: int
    received_at: dt.datetime
    completed_at: dt.datetime
    org_id: str = DEFAULT_ORG
    key_id: str | None = None
    attempt_log: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The public shape served by ``GET /flexroute/v1/requests/{id}``."""
        data = asdict(self)
        for name in ("standard_cost", "actual_cost", "saving", "fee", "usage", "attempt_log"):
            data.pop(name)
        data["received_at"] = self.received_at.isoformat()
        data["completed_at"] = self.completed_at.isoformat()
        data["usage"] = self.usage.as_dict() if self.usage else None
        data["cost_usd"] = _money(self.actual_cost)
        data["standard_cost_usd"] = _money(self.standard_cost)
        data["saving_usd"] = format_usd(self.saving)
        data["fee_usd"] = format_usd(self.fee)
        data["attempt_log"] = list(self.attempt_log)
        return data


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else format_usd(amount)


class Store(Protocol):
    """Where records live. ``record`` is idempotent on ``request_id``."""

    async def record(self, record: LedgerRecord) -> bool:
        """Write ``record`` durably; False if a record with that id already existed."""

    async def get(self, request_id: str) -> LedgerRecord | None: ...

    async def aclose(self) -> None: ...


def open_store(database_url: str) -> Store:
    """The store for a ``FLEXROUTE_DATABASE_URL``."""
    if database_url.startswith("sqlite:///"):
        from flexroute.ledger.sqlite import SQLiteStore

        return SQLiteStore(database_url.removeprefix("sqlite:///"))
    if database_url == "sqlite://:memory:":
        from flexroute.ledger.sqlite import SQLiteStore

        return SQLiteStore(":memory:")
    raise ConfigError(
        f"FLEXROUTE_DATABASE_URL {database_url!r} is not supported yet: use "
        "sqlite:////absolute/path.sqlite3 (PostgreSQL arrives with the billing work)"
    )

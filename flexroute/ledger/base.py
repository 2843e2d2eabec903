"""The record and the store interface; backends live beside this module."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from flexroute.ledger.keys import ApiKey, SealedProviderKey
from flexroute.ledger.quota import Caps, Outcome, Reservation, Totals
from flexroute.ledger.sessions import Session
from flexroute.money import format_usd
from flexroute.usage import Usage

DEFAULT_ORG = "default"


class Status(enum.StrEnum):
    """What happened to a request that reached a provider (SPEC §8), as its record says."""

    OK = "ok"  # the client received the whole answer
    CLIENT_CLOSED = "client_closed"  # the client went away first
    UPSTREAM_ERROR = "upstream_error"  # the provider answered an error, or broke off
    UPSTREAM_TIMEOUT = "upstream_timeout"  # the provider was too slow for flexroute's bounds
    PROXY_ERROR = "proxy_error"  # flexroute itself failed


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
    status: str  # a Status
    http_status: int
    received_at: dt.datetime
    completed_at: dt.datetime
    org_id: str = DEFAULT_ORG
    key_id: str | None = None
    attempt_log: tuple[dict[str, Any], ...] = field(default=())
    # adaptive flex: the predicted P(flex starts within the budget) when the route was
    # chosen (None: not a flex request, or too little seen to say)
    flex_probability: float | None = None

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


ACTIVE = "active"
PAST_DUE = "past_due"


@dataclass(frozen=True, slots=True)
class Invoice:
    """One charge of an organisation for one monthly period (``"2026-11"``).

    ``amount`` is the exact sum of the fees it covers; ``status`` is ``charging`` (claimed, the
    processor is being asked), ``open`` (sent for manual payment), ``paid`` or ``failed``.
    ``attempts`` counts processor attempts; each has its own idempotency key.
    """

    invoice_id: str
    org_id: str
    period: str
    amount: Decimal
    status: str
    reason: str | None
    attempts: int
    reference: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    credit_used: Decimal = Decimal(0)  # free credit taken before ``amount`` was charged

    @property
    def idempotency_key(self) -> str:
        """Per organisation, period and attempt: a replayed attempt is never charged twice."""
        return f"flexroute-{self.org_id}-{self.period}-{self.attempts}"

    def to_json(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "period": self.period,
            "amount_usd": format_usd(self.amount),
            "credit_used_usd": format_usd(self.credit_used),
            "status": self.status,
            "reason": self.reason,
            "attempts": self.attempts,
            "reference": self.reference,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Org:
    """An organisation's billing state. ``unpaid_balance`` is every fee not yet paid for
    (uncharged fees beyond the free credit left, plus invoices not paid); ``amount_due`` the
    part already charged without success (failed or open invoices). ``credit`` is the free
    credit granted, ``credit_left`` what uncharged fees and invoices have not used yet."""

    org_id: str
    state: str = ACTIVE
    reason: str | None = None
    card_status: str = "none"  # "none" | "valid" | "declined"
    customer_ref: str | None = None
    unpaid_balance: Decimal = Decimal(0)
    amount_due: Decimal = Decimal(0)
    last_invoice: Invoice | None = None
    credit: Decimal = Decimal(0)
    credit_left: Decimal = Decimal(0)

    @property
    def out_of_credit(self) -> bool:
        """Free credit was granted, is used up, and no valid card is on file (402
        ``insufficient_quota`` for billable flex)."""
        return self.credit > 0 and self.credit_left <= 0 and self.card_status != "valid"

    def to_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "state": self.state,
            "reason": self.reason,
            "card_status": self.card_status,
            "unpaid_balance_usd": format_usd(self.unpaid_balance),
            "amount_due_usd": format_usd(self.amount_due),
            "credit_usd": format_usd(self.credit),
            "credit_left_usd": format_usd(self.credit_left),
            "last_invoice": None if self.last_invoice is None else self.last_invoice.to_json(),
        }


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Totals of one (day, model, route) group; costs are zero where calls were unpriced."""

    day: str
    model: str | None
    route: str
    requests: int
    cost: Decimal
    standard_cost: Decimal
    saving: Decimal
    fee: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "model": self.model,
            "route": self.route,
            "requests": self.requests,
            "cost_usd": format_usd(self.cost),
            "standard_cost_usd": format_usd(self.standard_cost),
            "saving_usd": format_usd(self.saving),
            "fee_usd": format_usd(self.fee),
        }


class Store(Protocol):
    """Where records and billing state live.

    ``record`` is idempotent on ``request_id``. Balances are never stored: an organisation's
    unpaid balance is derived from its records and invoices, so the fee and the balance change
    are one row written in one transaction. The invoice methods are the billing run's atomic
    steps; each backend makes them safe across processes (see ``flexroute.billing.run``).
    """

    async def record(self, record: LedgerRecord) -> bool:
        """Write ``record`` durably; False if a record with that id already existed."""

    async def get(self, request_id: str) -> LedgerRecord | None: ...

    async def upgrade(self) -> int:
        """Apply pending schema migrations; return the schema version."""

    async def org(self, org_id: str) -> Org:
        """The organisation's billing state (an unknown org is active with nothing owed)."""

    async def org_state(self, org_id: str) -> str:
        """Just the billing state (``active`` or ``past_due``): one indexed row, no sums.
        The gate asks this on the request path; :meth:`org` is for the 402 body and the CLI."""

    async def org_ids(self) -> list[str]:
        """Every organisation with billing state or ledger records."""

    async def set_card(self, org_id: str, card_status: str, customer_ref: str | None) -> None: ...

    async def set_state(self, org_id: str, state: str, reason: str | None) -> None: ...

    async def claim_invoice(
        self, org_id: str, period: str, period_end: dt.datetime, threshold: Decimal
    ) -> Invoice | None:
        """In one transaction: unless (org, period) already has an invoice, attach every
        uncharged fee received before ``period_end`` to a new ``charging`` invoice; keep it
        only if it reaches ``threshold``. None when nothing was claimed."""

    async def retry_invoice(self, seen: Invoice) -> Invoice | None:
        """Start one more attempt (a new idempotency key, no reference yet) at an invoice that
        is still as ``seen`` — ``failed``, or ``charging`` left stale — compare and set on its
        status and attempts, so of concurrent callers exactly one gets it; None otherwise."""

    async def settle_invoice(
        self, invoice_id: str, status: str, reason: str | None, reference: str | None
    ) -> Invoice:
        """Record an attempt's outcome and, in the same transaction, the org's state:
        ``failed`` makes it past-due with ``reason``; ``paid`` makes it active when no other
        invoice is failed."""

    async def invoices(self, org_id: str) -> list[Invoice]:
        """The org's invoices, oldest first."""

    async def usage(
        self, org_id: str | None = None, since: dt.datetime | None = None
    ) -> list[UsageRow]:
        """Totals by day (UTC), model and route, optionally for one org and from ``since``."""

    async def invoice_usage(self, invoice_id: str) -> list[UsageRow]:
        """Totals by day, model and route of exactly the fees ``invoice_id`` covers."""

    async def grant_credit(self, org_id: str, amount: Decimal) -> bool:
        """Give a *new* organisation ``amount`` USD of free fee credit; False (nothing
        changed) if the organisation already has billing state."""

    async def caps(self, org_id: str, key_id: str | None) -> tuple[Caps, Caps]:
        """The organisation's caps and the key's (see :mod:`flexroute.ledger.quota`)."""

    async def set_caps(self, org_id: str, key_id: str | None, caps: Caps) -> None:
        """Replace the organisation's (``key_id`` None) or the key's caps."""

    async def month_totals(
        self, org_id: str, key_id: str | None, since: dt.datetime
    ) -> tuple[Totals, Totals]:
        """Recorded spend and fees since ``since``, of the organisation and of the key."""

    async def reserve(self, reservations: list[Reservation], since: dt.datetime) -> list[Outcome]:
        """Atomically, across processes: for each of one organisation's ``reservations``, in
        order, write it unless it would break a cap (totals since ``since`` plus every live
        reservation, earlier ones of the batch included); one :class:`Outcome` each."""

    async def release(self, reservation_ids: list[str]) -> None:
        """Delete reservations (their requests' records are written, or they never went out)."""

    async def create_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a new flexroute key by its hash (see :mod:`flexroute.ledger.keys`)."""

    async def key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def keys(self, org_id: str | None = None) -> list[ApiKey]: ...

    async def revoke_key(self, key_id: str) -> bool:
        """Mark a key revoked; False if there is no such key."""

    async def has_keys(self) -> bool:
        """Whether any flexroute key (revoked or not) exists: the gateway-mode switch."""

    async def set_provider_key(self, key: SealedProviderKey) -> None:
        """Store (or replace) an organisation's sealed provider key."""

    async def provider_keys(self, org_id: str | None = None) -> list[SealedProviderKey]: ...

    async def provider_key(self, org_id: str, provider: str) -> SealedProviderKey | None: ...

    async def recent(self, org_id: str, limit: int) -> list[LedgerRecord]:
        """The organisation's latest ``limit`` records, newest first (the dashboard)."""

    async def key_months(self, org_id: str, since: dt.datetime) -> dict[str, Totals]:
        """Each of the organisation's keys' spend and fees from ``since`` (as
        ``month_totals`` gives one key's), in one query; a key with no records is absent."""

    async def create_session(self, session_hash: str, session: Session) -> None:
        """Store a dashboard session by the hash of its id; drop expired sessions."""

    async def session(self, session_hash: str) -> Session | None: ...

    async def end_session(self, session_hash: str) -> None: ...

    async def aclose(self) -> None: ...


def period_of(at: dt.datetime) -> tuple[str, dt.datetime]:
    """The monthly period (UTC) containing ``at``: its name and its exclusive end."""
    at = at.astimezone(dt.UTC)
    if at.month == 12:
        end = dt.datetime(at.year + 1, 1, 1, tzinfo=dt.UTC)
    else:
        end = dt.datetime(at.year, at.month + 1, 1, tzinfo=dt.UTC)
    return f"{at.year:04d}-{at.month:02d}", end


def new_invoice_id() -> str:
    return f"inv_{uuid.uuid4().hex}"

"""Spend caps and reservations as the store keeps them (issue 15).

A cap is per organisation (``key_id`` ``""`` in the ``caps`` table) or per key, monthly (UTC):
``fee_cap`` on fees, ``spend_cap`` on provider spend (the ledger's ``actual_cost`` of every
request). A request of a capped organisation or key first *reserves* its estimated cost and fee
(:class:`Reservation`); the store admits it only if, per-organisation under one lock, the
month's recorded totals plus every live reservation plus this one stay within each cap. The
reservation is deleted once the request's record is written, so at any moment a cap can be
exceeded only by what in-flight requests cost beyond their estimates.

Both backends share the SQL here and the pure :func:`blocked` decision.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal

from flexroute.money import ZERO, to_pico

__all__ = ["Blocked", "Caps", "Outcome", "Reservation", "Totals", "blocked", "month_start"]

ORG_SCOPE = ""  # the caps table's key_id for an organisation-wide cap


@dataclass(frozen=True, slots=True)
class Caps:
    """Monthly caps of one scope (an org or a key); None is no cap."""

    fee_cap: Decimal | None = None
    spend_cap: Decimal | None = None

    @property
    def any(self) -> bool:
        return self.fee_cap is not None or self.spend_cap is not None


NO_CAPS = Caps()


@dataclass(frozen=True, slots=True)
class Totals:
    """A scope's month so far: recorded spend and fees (plus, in a reservation check, what
    live reservations hold)."""

    spend: Decimal = ZERO
    fees: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Reservation:
    org_id: str
    key_id: str | None
    cost: Decimal
    fee: Decimal
    expires_at: dt.datetime
    reservation_id: str = ""

    def __post_init__(self) -> None:
        if not self.reservation_id:
            object.__setattr__(self, "reservation_id", f"rsv_{uuid.uuid4().hex}")


@dataclass(frozen=True, slots=True)
class Blocked:
    """Which cap a request would break: ``scope`` ``organization`` or ``key``, ``kind``
    ``spend`` or ``fee``, the cap and the month's total (recorded plus reserved)."""

    scope: str
    kind: str
    cap: Decimal
    total: Decimal


def blocked(
    caps: tuple[Caps, Caps], totals: tuple[Totals, Totals], cost: Decimal, fee: Decimal
) -> Blocked | None:
    """The first cap (org, then key; spend, then fee) that ``cost``/``fee`` more would
    exceed; None if the request fits. A scope already at its cap admits nothing, even a
    request estimated at zero."""
    for scope, cap, total in zip(("organization", "key"), caps, totals, strict=True):
        if cap.spend_cap is not None and (
            total.spend + cost > cap.spend_cap or total.spend >= cap.spend_cap
        ):
            return Blocked(scope, "spend", cap.spend_cap, total.spend)
        if (
            fee > 0
            and cap.fee_cap is not None
            and (total.fees + fee > cap.fee_cap or total.fees >= cap.fee_cap)
        ):
            return Blocked(scope, "fee", cap.fee_cap, total.fees)
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """A reservation's verdict (None: written), the caps read and the totals it was checked
    against (recorded plus live reservations, before it)."""

    blocked: Blocked | None
    caps: tuple[Caps, Caps]
    totals: tuple[Totals, Totals]


def plus(total: Totals, reservation: Reservation) -> Totals:
    return Totals(total.spend + reservation.cost, total.fees + reservation.fee)


def reservation_row(reservation: Reservation, *, iso: bool) -> tuple[object, ...]:
    expires = reservation.expires_at.astimezone(dt.UTC)
    return (
        reservation.reservation_id,
        reservation.org_id,
        reservation.key_id,
        to_pico(reservation.cost),
        to_pico(reservation.fee),
        expires.isoformat() if iso else expires,
    )


def month_start(at: dt.datetime) -> dt.datetime:
    at = at.astimezone(dt.UTC)
    return dt.datetime(at.year, at.month, 1, tzinfo=dt.UTC)


def next_month(at: dt.datetime) -> dt.datetime:
    """When the caps reset: the start of the next month (UTC)."""
    start = month_start(at)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


# -- SQL shared by both stores (``?`` placeholders; ``_sql.pg`` converts) ------------------

CAPS_OF = (
    "SELECT key_id, fee_cap_pico, spend_cap_pico FROM caps WHERE org_id = ? AND key_id IN ('', ?)"
)
UPSERT_CAPS = (
    "INSERT INTO caps (org_id, key_id, fee_cap_pico, spend_cap_pico, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (org_id, key_id) DO UPDATE SET "
    "fee_cap_pico = excluded.fee_cap_pico, spend_cap_pico = excluded.spend_cap_pico, "
    "updated_at = excluded.updated_at"
)
ORG_MONTH = (
    "SELECT COALESCE(SUM(actual_cost_pico), 0), COALESCE(SUM(fee_pico), 0) FROM requests "
    "WHERE org_id = ? AND received_at >= ?"
)
KEY_MONTH = (
    "SELECT COALESCE(SUM(actual_cost_pico), 0), COALESCE(SUM(fee_pico), 0) FROM requests "
    "WHERE key_id = ? AND received_at >= ? AND org_id = ?"
)
ORG_RESERVED = (
    "SELECT COALESCE(SUM(cost_pico), 0), COALESCE(SUM(fee_pico), 0) FROM reservations "
    "WHERE org_id = ? AND expires_at > ?"
)
KEY_RESERVED = (
    "SELECT COALESCE(SUM(cost_pico), 0), COALESCE(SUM(fee_pico), 0) FROM reservations "
    "WHERE org_id = ? AND key_id = ? AND expires_at > ?"
)
INSERT_RESERVATION = (
    "INSERT INTO reservations (reservation_id, org_id, key_id, cost_pico, fee_pico, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
DELETE_RESERVATION = "DELETE FROM reservations WHERE reservation_id = ?"
DELETE_EXPIRED = "DELETE FROM reservations WHERE org_id = ? AND expires_at <= ?"

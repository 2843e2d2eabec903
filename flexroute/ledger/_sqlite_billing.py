"""The SQLite store's billing steps: plain functions over one connection, each run by
:class:`~flexroute.ledger.sqlite.SQLiteStore` on a worker thread inside ``BEGIN IMMEDIATE``
(one writer at a time, across processes too, thanks to SQLite's file lock)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from typing import Any

from flexroute.ledger import _sql as q
from flexroute.ledger.base import ACTIVE, PAST_DUE, Invoice, Org, UsageRow, new_invoice_id
from flexroute.money import from_pico, to_pico


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def invoice_from_row(row: tuple[Any, ...]) -> Invoice:
    (invoice_id, org_id, period, amount, status, reason, attempts, reference, created,
     updated, credit) = row  # fmt: skip
    return Invoice(
        invoice_id=invoice_id,
        org_id=org_id,
        period=period,
        amount=from_pico(int(amount)),
        status=status,
        reason=reason,
        attempts=attempts,
        reference=reference,
        created_at=_time(created),
        updated_at=_time(updated),
        credit_used=from_pico(int(credit)),
    )


def _time(value: str | dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def build_org(
    org_id: str,
    row: tuple[Any, ...] | None,
    uncharged: int,
    unpaid_invoices: int,
    due: int,
    last: tuple[Any, ...] | None,
    invoiced_credit: int = 0,
) -> Org:
    """Uncharged fees are taken from the credit left first (SPEC §8, issue 15)."""
    state, reason, card_status, customer_ref, credit = row or (ACTIVE, None, "none", None, 0)
    left = max(0, int(credit) - int(invoiced_credit))
    covered = min(left, int(uncharged))
    return Org(
        org_id=org_id,
        state=state,
        reason=reason,
        card_status=card_status,
        customer_ref=customer_ref,
        unpaid_balance=from_pico(int(uncharged) - covered + int(unpaid_invoices)),
        amount_due=from_pico(int(due)),
        last_invoice=None if last is None else invoice_from_row(last),
        credit=from_pico(int(credit)),
        credit_left=from_pico(left - covered),
    )


def credit_applied(granted: int, invoiced_credit: int, fees: int) -> int:
    """How much of ``fees`` (pico-USD) an invoice takes from the credit left."""
    return min(max(0, granted - invoiced_credit), fees)


def org(db: sqlite3.Connection, org_id: str) -> Org:
    def one(sql: str) -> Any:
        return db.execute(sql, (org_id,)).fetchone()

    return build_org(
        org_id,
        one(q.ORG_ROW),
        one(q.UNCHARGED_SUM)[0],
        one(q.UNPAID_INVOICES_SUM)[0],
        one(q.AMOUNT_DUE_SUM)[0],
        one(q.LAST_INVOICE),
        one(q.INVOICED_CREDIT_SUM)[0],
    )


def claim_invoice(
    db: sqlite3.Connection, org_id: str, period: str, end: dt.datetime, threshold: Decimal
) -> Invoice | None:
    invoice_id, now = new_invoice_id(), _now()
    if db.execute(q.INSERT_INVOICE, (invoice_id, org_id, period, now, now)).rowcount != 1:
        return None  # this (org, period) was claimed before
    db.execute(q.ASSIGN_FEES, (invoice_id, org_id, end.astimezone(dt.UTC).isoformat()))
    (fees,) = db.execute(q.INVOICE_FEES_SUM, (invoice_id,)).fetchone()
    granted = (db.execute(q.ORG_ROW, (org_id,)).fetchone() or (0, 0, 0, 0, 0))[4]
    (invoiced,) = db.execute(q.INVOICED_CREDIT_SUM, (org_id,)).fetchone()
    credit = credit_applied(int(granted), int(invoiced), int(fees))
    amount = int(fees) - credit
    if amount < to_pico(threshold) or amount == 0:
        raise BelowThreshold
    db.execute(q.SET_INVOICE_AMOUNT, (amount, credit, invoice_id))
    return invoice_from_row(db.execute(q.INVOICE_BY_ID, (invoice_id,)).fetchone())


class BelowThreshold(Exception):  # noqa: N818 -- a signal to roll back, not an error
    pass


def retry_invoice(db: sqlite3.Connection, seen: Invoice) -> Invoice | None:
    args = (_now(), seen.invoice_id, seen.status, seen.attempts)
    if db.execute(q.RETRY_INVOICE, args).rowcount != 1:
        return None
    return invoice_from_row(db.execute(q.INVOICE_BY_ID, (seen.invoice_id,)).fetchone())


def settle_invoice(
    db: sqlite3.Connection, invoice_id: str, status: str, reason: str | None, ref: str | None
) -> Invoice:
    now = _now()
    if db.execute(q.SETTLE_INVOICE, (status, reason, ref, now, invoice_id)).rowcount != 1:
        raise KeyError(invoice_id)
    invoice = invoice_from_row(db.execute(q.INVOICE_BY_ID, (invoice_id,)).fetchone())
    if status == "failed":
        db.execute(q.UPSERT_STATE, (invoice.org_id, PAST_DUE, reason, now))
    elif status == "paid":
        (failed,) = db.execute(q.FAILED_COUNT, (invoice.org_id,)).fetchone()
        if failed == 0:
            db.execute(q.UPSERT_STATE, (invoice.org_id, ACTIVE, None, now))
    return invoice


def usage(db: sqlite3.Connection, org_id: str | None, since: dt.datetime | None) -> list[UsageRow]:
    sql = q.usage_query("substr(received_at, 1, 10)", org_id is not None, since is not None)
    params: list[Any] = [] if org_id is None else [org_id]
    if since is not None:
        params.append(since.astimezone(dt.UTC).isoformat())
    return usage_rows(db.execute(sql, params).fetchall())


def usage_rows(rows: list[Any]) -> list[UsageRow]:
    out = [
        UsageRow(
            day=day,
            model=model,
            route=route,
            requests=int(count),
            cost=from_pico(int(cost)),
            standard_cost=from_pico(int(standard)),
            saving=from_pico(int(saving)),
            fee=from_pico(int(fee)),
        )
        for day, model, route, count, cost, standard, saving, fee in rows
    ]
    return sorted(out, key=lambda r: (r.day, r.model or "", r.route))

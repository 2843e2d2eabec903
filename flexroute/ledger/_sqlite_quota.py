"""The SQLite store's caps, reservations and credit: plain functions over one connection, run
by :class:`~flexroute.ledger.sqlite.SQLiteStore` on a worker thread (``reserve`` and
``grant_credit`` inside ``BEGIN IMMEDIATE``: one writer at a time across processes, so two
proxies sharing the file check a cap one after the other)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from typing import Any

from flexroute.ledger import quota as r
from flexroute.ledger.quota import Caps, Reservation, Totals
from flexroute.money import from_pico, to_pico


def caps(db: sqlite3.Connection, org_id: str, key_id: str | None) -> tuple[Caps, Caps]:
    return caps_from_rows(db.execute(r.CAPS_OF, (org_id, key_id or r.ORG_SCOPE)).fetchall())


def caps_from_rows(rows: list[tuple[Any, ...]]) -> tuple[Caps, Caps]:
    org, key = r.NO_CAPS, r.NO_CAPS
    for key_id, fee, spend in rows:
        found = Caps(_usd(fee), _usd(spend))
        if key_id == r.ORG_SCOPE:
            org = found
        else:
            key = found
    return org, key


def _usd(pico: int | None) -> Decimal | None:
    return None if pico is None else from_pico(int(pico))


def set_caps(db: sqlite3.Connection, org_id: str, key_id: str | None, new: Caps) -> None:
    row = (
        org_id,
        key_id or r.ORG_SCOPE,
        None if new.fee_cap is None else to_pico(new.fee_cap),
        None if new.spend_cap is None else to_pico(new.spend_cap),
        dt.datetime.now(dt.UTC).isoformat(),
    )
    db.execute(r.UPSERT_CAPS, row)


def totals(
    db: sqlite3.Connection, org_id: str, key_id: str | None, since: dt.datetime
) -> tuple[Totals, Totals]:
    start = since.astimezone(dt.UTC).isoformat()
    org = _totals(db.execute(r.ORG_MONTH, (org_id, start)).fetchone())
    key = Totals()
    if key_id is not None:
        key = _totals(db.execute(r.KEY_MONTH, (key_id, start, org_id)).fetchone())
    return org, key


def _totals(row: tuple[int, int]) -> Totals:
    return Totals(from_pico(int(row[0])), from_pico(int(row[1])))


def reserve(
    db: sqlite3.Connection, reservations: list[Reservation], since: dt.datetime
) -> list[r.Outcome]:
    """In the caller's ``BEGIN IMMEDIATE``: each reservation (one organisation's, in order)
    checked against the caps, the month and every live reservation, earlier ones of the
    batch included, and written if it fits."""
    now = dt.datetime.now(dt.UTC).isoformat()
    org_id = reservations[0].org_id
    db.execute(r.DELETE_EXPIRED, (org_id, now))
    org = _plus(
        totals(db, org_id, None, since)[0], db.execute(r.ORG_RESERVED, (org_id, now)).fetchone()
    )
    keys: dict[str, Totals] = {}
    out = []
    for reservation in reservations:
        key_id = reservation.key_id
        found = caps(db, org_id, key_id)
        key = Totals()
        if key_id is not None:
            if key_id not in keys:
                month = totals(db, org_id, key_id, since)[1]
                keys[key_id] = _plus(
                    month, db.execute(r.KEY_RESERVED, (org_id, key_id, now)).fetchone()
                )
            key = keys[key_id]
        verdict = r.blocked(found, (org, key), reservation.cost, reservation.fee)
        out.append(r.Outcome(verdict, found, (org, key)))
        if verdict is None:
            db.execute(r.INSERT_RESERVATION, r.reservation_row(reservation, iso=True))
            org = r.plus(org, reservation)
            if key_id is not None:
                keys[key_id] = r.plus(keys[key_id], reservation)
    return out


def _plus(base: Totals, row: tuple[int, int]) -> Totals:
    return Totals(base.spend + from_pico(int(row[0])), base.fees + from_pico(int(row[1])))


def release(db: sqlite3.Connection, reservation_ids: list[str]) -> None:
    db.executemany(r.DELETE_RESERVATION, [(i,) for i in reservation_ids])

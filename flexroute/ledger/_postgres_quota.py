"""The PostgreSQL store's caps and reservations. ``reserve`` runs in one transaction under a
per-organisation advisory lock, so replicas check one organisation's caps one at a time (and
different organisations never wait for each other)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from flexroute.ledger import quota as r
from flexroute.ledger._sql import pg
from flexroute.ledger._sqlite_quota import caps_from_rows
from flexroute.ledger.quota import Caps, Reservation, Totals
from flexroute.money import from_pico, to_pico

Conn = psycopg.AsyncConnection[Any]


async def caps(conn: Conn, org_id: str, key_id: str | None) -> tuple[Caps, Caps]:
    cur = await conn.execute(pg(r.CAPS_OF), (org_id, key_id or r.ORG_SCOPE))
    return caps_from_rows(await cur.fetchall())


async def set_caps(conn: Conn, org_id: str, key_id: str | None, new: Caps) -> None:
    row = (
        org_id,
        key_id or r.ORG_SCOPE,
        None if new.fee_cap is None else to_pico(new.fee_cap),
        None if new.spend_cap is None else to_pico(new.spend_cap),
        dt.datetime.now(dt.UTC),
    )
    await conn.execute(pg(r.UPSERT_CAPS), row)


async def totals(
    conn: Conn, org_id: str, key_id: str | None, since: dt.datetime
) -> tuple[Totals, Totals]:
    org = await _sums(conn, r.ORG_MONTH, (org_id, since))
    key = Totals() if key_id is None else await _sums(conn, r.KEY_MONTH, (key_id, since, org_id))
    return org, key


async def _sums(conn: Conn, sql: str, params: tuple[Any, ...]) -> Totals:
    row = await (await conn.execute(pg(sql), params)).fetchone()
    assert row is not None  # an aggregate always returns a row
    return Totals(from_pico(int(row[0])), from_pico(int(row[1])))


async def reserve(
    conn: Conn, reservations: list[Reservation], since: dt.datetime
) -> list[r.Outcome]:
    """One organisation's reservations, in order, in one transaction under its lock."""
    org_id = reservations[0].org_id
    now = dt.datetime.now(dt.UTC)
    out = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('flexroute-cap:' || %s))", (org_id,)
        )
        await conn.execute(pg(r.DELETE_EXPIRED), (org_id, now))
        month, _ = await totals(conn, org_id, None, since)
        org = _add(month, await _sums(conn, r.ORG_RESERVED, (org_id, now)))
        keys: dict[str, Totals] = {}
        for reservation in reservations:
            key_id = reservation.key_id
            found = await caps(conn, org_id, key_id)
            key = Totals()
            if key_id is not None:
                if key_id not in keys:
                    _, mine = await totals(conn, org_id, key_id, since)
                    held = await _sums(conn, r.KEY_RESERVED, (org_id, key_id, now))
                    keys[key_id] = _add(mine, held)
                key = keys[key_id]
            verdict = r.blocked(found, (org, key), reservation.cost, reservation.fee)
            out.append(r.Outcome(verdict, found, (org, key)))
            if verdict is None:
                await conn.execute(
                    pg(r.INSERT_RESERVATION), r.reservation_row(reservation, iso=False)
                )
                org = r.plus(org, reservation)
                if key_id is not None:
                    keys[key_id] = r.plus(keys[key_id], reservation)
    return out


def _add(a: Totals, b: Totals) -> Totals:
    return Totals(a.spend + b.spend, a.fees + b.fees)


async def release(conn: Conn, reservation_ids: list[str]) -> None:
    await conn.execute(
        "DELETE FROM reservations WHERE reservation_id = ANY(%s)", (reservation_ids,)
    )

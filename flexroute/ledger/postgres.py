"""The shared ledger: PostgreSQL through psycopg 3 (async, a small connection pool).

For several proxy replicas sharing one ledger. Money is ``BIGINT`` pico-USD (sums come back as
exact ``NUMERIC``); a record is one ``INSERT … ON CONFLICT DO NOTHING`` committed before
``record`` returns. Migrations run when the store is first used (and by ``flexroute db
upgrade``) under an advisory lock, so replicas starting together migrate once. Billing steps
are single transactions; ``UNIQUE (org_id, period)`` and compare-and-set updates make them
safe when several processes run them at once. psycopg errors become :class:`LedgerError` here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import anyio
import psycopg
from psycopg_pool import AsyncConnectionPool

from flexroute.errors import LedgerError
from flexroute.ledger import _postgres_quota as quota
from flexroute.ledger import _sql as q
from flexroute.ledger import keys as k
from flexroute.ledger import sessions as s
from flexroute.ledger._postgres_schema import MIGRATIONS, migrate
from flexroute.ledger._rows import COLUMNS, from_row, to_row
from flexroute.ledger._sqlite_billing import (
    BelowThreshold,
    build_org,
    credit_applied,
    invoice_from_row,
    usage_rows,
)
from flexroute.ledger.base import (
    ACTIVE,
    PAST_DUE,
    Invoice,
    LedgerRecord,
    Org,
    UsageRow,
    new_invoice_id,
)
from flexroute.ledger.quota import Caps, Outcome, Reservation, Totals
from flexroute.money import to_pico

# JSON columns come back as text so both backends share one row reader.
_SELECT = COLUMNS.replace("usage_json", "usage_json::text").replace(
    "attempt_log_json", "attempt_log_json::text"
)
_INSERT = (
    f"INSERT INTO requests ({COLUMNS}) VALUES ({', '.join(['%s'] * 24)}) "  # noqa: S608 -- fixed columns
    "ON CONFLICT (request_id) DO NOTHING"
)
_DAY = "to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


class PostgresStore:
    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, kwargs={"autocommit": True}
        )
        self._ready = False
        self._opening: anyio.Lock | None = None

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection, the pool opened and the schema migrated on first use."""
        try:
            if not self._ready:
                await self._open()
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise LedgerError(f"PostgreSQL ledger: {exc}") from exc

    async def _open(self) -> None:
        self._opening = self._opening or anyio.Lock()
        async with self._opening:
            if self._ready:
                return
            await self._pool.open(wait=True, timeout=10)
            async with self._pool.connection() as conn:
                await migrate(conn)
            self._ready = True

    async def upgrade(self) -> int:
        async with self._conn():
            return len(MIGRATIONS)

    async def record(self, record: LedgerRecord) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(_INSERT, to_row(record))
            return cur.rowcount == 1

    async def get(self, request_id: str) -> LedgerRecord | None:
        sql = f"SELECT {_SELECT} FROM requests WHERE request_id = %s"  # noqa: S608 -- fixed columns
        row = await self._one(sql, (request_id,))
        return None if row is None else from_row(row)

    async def org_state(self, org_id: str) -> str:
        async with self._conn() as conn:
            row = await (await conn.execute(q.pg(q.ORG_STATE), (org_id,))).fetchone()
        return str(row[0]) if row else ACTIVE

    async def org(self, org_id: str) -> Org:
        async with self._conn() as conn:

            async def one(sql: str) -> Any:
                return await (await conn.execute(q.pg(sql), (org_id,))).fetchone()

            return build_org(
                org_id,
                await one(q.ORG_ROW),
                (await one(q.UNCHARGED_SUM))[0],
                (await one(q.UNPAID_INVOICES_SUM))[0],
                (await one(q.AMOUNT_DUE_SUM))[0],
                await one(q.LAST_INVOICE),
                (await one(q.INVOICED_CREDIT_SUM))[0],
            )

    async def org_ids(self) -> list[str]:
        async with self._conn() as conn:
            rows = await (await conn.execute(q.ORG_IDS)).fetchall()
        return sorted(row[0] for row in rows)

    async def set_card(self, org_id: str, card_status: str, customer_ref: str | None) -> None:
        async with self._conn() as conn:
            await conn.execute(q.pg(q.UPSERT_CARD), (org_id, card_status, customer_ref, _now()))

    async def set_state(self, org_id: str, state: str, reason: str | None) -> None:
        async with self._conn() as conn:
            await conn.execute(q.pg(q.UPSERT_STATE), (org_id, state, reason, _now()))

    async def claim_invoice(
        self, org_id: str, period: str, period_end: dt.datetime, threshold: Decimal
    ) -> Invoice | None:
        invoice_id, now = new_invoice_id(), _now()
        try:
            async with self._conn() as conn, conn.transaction():
                cur = await conn.execute(
                    q.pg(q.INSERT_INVOICE), (invoice_id, org_id, period, now, now)
                )
                if cur.rowcount != 1:
                    return None
                await conn.execute(q.pg(q.ASSIGN_FEES), (invoice_id, org_id, period_end))
                cur = await conn.execute(q.pg(q.INVOICE_FEES_SUM), (invoice_id,))
                fees = int((await cur.fetchone() or (0,))[0])
                cur = await conn.execute(q.pg(q.ORG_ROW), (org_id,))
                granted = (await cur.fetchone() or (0, 0, 0, 0, 0))[4]
                cur = await conn.execute(q.pg(q.INVOICED_CREDIT_SUM), (org_id,))
                invoiced = (await cur.fetchone() or (0,))[0]
                credit = credit_applied(int(granted), int(invoiced), fees)
                amount = fees - credit
                if amount == 0 or amount < to_pico(threshold):
                    raise BelowThreshold
                await conn.execute(q.pg(q.SET_INVOICE_AMOUNT), (amount, credit, invoice_id))
                return await self._invoice(conn, invoice_id)
        except BelowThreshold:
            return None

    async def retry_invoice(self, seen: Invoice) -> Invoice | None:
        async with self._conn() as conn, conn.transaction():
            args = (_now(), seen.invoice_id, seen.status, seen.attempts)
            cur = await conn.execute(q.pg(q.RETRY_INVOICE), args)
            if cur.rowcount != 1:
                return None
            return await self._invoice(conn, seen.invoice_id)

    async def settle_invoice(
        self, invoice_id: str, status: str, reason: str | None, reference: str | None
    ) -> Invoice:
        now = _now()
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                q.pg(q.SETTLE_INVOICE), (status, reason, reference, now, invoice_id)
            )
            if cur.rowcount != 1:
                raise LedgerError(f"no invoice {invoice_id}")
            invoice = await self._invoice(conn, invoice_id)
            if status == "failed":
                await conn.execute(q.pg(q.UPSERT_STATE), (invoice.org_id, PAST_DUE, reason, now))
            elif status == "paid":
                cur = await conn.execute(q.pg(q.FAILED_COUNT), (invoice.org_id,))
                if (await cur.fetchone() or (0,))[0] == 0:
                    await conn.execute(q.pg(q.UPSERT_STATE), (invoice.org_id, ACTIVE, None, now))
            return invoice

    async def invoices(self, org_id: str) -> list[Invoice]:
        async with self._conn() as conn:
            rows = await (await conn.execute(q.pg(q.INVOICES_OF), (org_id,))).fetchall()
        return [invoice_from_row(row) for row in rows]

    async def usage(
        self, org_id: str | None = None, since: dt.datetime | None = None
    ) -> list[UsageRow]:
        sql = q.pg(q.usage_query(_DAY, org_id is not None, since is not None))
        params: list[Any] = [] if org_id is None else [org_id]
        if since is not None:
            params.append(since)
        async with self._conn() as conn:
            rows = await (await conn.execute(sql, params)).fetchall()
        return usage_rows(rows)

    async def invoice_usage(self, invoice_id: str) -> list[UsageRow]:
        sql = q.pg(q.usage_query(_DAY, False, False, invoice=True))
        return usage_rows(await self._all(sql, (invoice_id,)))

    async def grant_credit(self, org_id: str, amount: Decimal) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(q.pg(q.GRANT_CREDIT), (org_id, to_pico(amount), _now()))
            return cur.rowcount == 1

    # -- caps and reservations (flexroute.ledger.quota) ------------------------------------

    async def caps(self, org_id: str, key_id: str | None) -> tuple[Caps, Caps]:
        async with self._conn() as conn:
            return await quota.caps(conn, org_id, key_id)

    async def set_caps(self, org_id: str, key_id: str | None, caps: Caps) -> None:
        async with self._conn() as conn:
            await quota.set_caps(conn, org_id, key_id, caps)

    async def month_totals(
        self, org_id: str, key_id: str | None, since: dt.datetime
    ) -> tuple[Totals, Totals]:
        async with self._conn() as conn:
            return await quota.totals(conn, org_id, key_id, since)

    async def reserve(self, reservations: list[Reservation], since: dt.datetime) -> list[Outcome]:
        async with self._conn() as conn:
            return await quota.reserve(conn, reservations, since)

    async def release(self, reservation_ids: list[str]) -> None:
        async with self._conn() as conn:
            await quota.release(conn, reservation_ids)

    # -- gateway access (flexroute.ledger.keys) --------------------------------------------

    async def create_key(self, key: k.ApiKey, key_hash: str) -> None:
        row = (key.key_id, key.org_id, key_hash, key.tier, key.revoked, key.created_at)
        async with self._conn() as conn:
            await conn.execute(q.pg(k.INSERT_KEY), row)

    async def key_by_hash(self, key_hash: str) -> k.ApiKey | None:
        row = await self._one(q.pg(k.KEY_BY_HASH), (key_hash,))
        return None if row is None else k.key_from_row(row)

    async def keys(self, org_id: str | None = None) -> list[k.ApiKey]:
        sql, args = (k.KEYS_ALL, ()) if org_id is None else (k.KEYS_OF, (org_id,))
        return [k.key_from_row(r) for r in await self._all(q.pg(sql), args)]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(q.pg(k.REVOKE_KEY), (True, key_id))
            return cur.rowcount == 1

    async def has_keys(self) -> bool:
        return await self._one(k.ANY_KEY, ()) is not None

    async def set_provider_key(self, key: k.SealedProviderKey) -> None:
        row = (key.org_id, key.provider, key.sealed, key.fingerprint, key.updated_at)
        async with self._conn() as conn:
            await conn.execute(q.pg(k.UPSERT_PROVIDER_KEY), row)

    async def provider_keys(self, org_id: str | None = None) -> list[k.SealedProviderKey]:
        sql = k.PROVIDER_KEYS_ALL if org_id is None else k.PROVIDER_KEYS_OF
        args = () if org_id is None else (org_id,)
        return [k.provider_key_from_row(r) for r in await self._all(q.pg(sql), args)]

    async def provider_key(self, org_id: str, provider: str) -> k.SealedProviderKey | None:
        row = await self._one(q.pg(k.PROVIDER_KEY), (org_id, provider))
        return None if row is None else k.provider_key_from_row(row)

    # -- the dashboard (flexroute.ledger.sessions) -----------------------------------------

    async def recent(self, org_id: str, limit: int) -> list[LedgerRecord]:
        rows = await self._all(q.pg(s.recent_query(_SELECT)), (org_id, limit))
        return [from_row(row) for row in rows]

    async def key_months(self, org_id: str, since: dt.datetime) -> dict[str, Totals]:
        return s.key_months_from_rows(await self._all(q.pg(s.KEY_MONTHS), (org_id, since)))

    async def create_session(self, session_hash: str, session: s.Session) -> None:
        async with self._conn() as conn, conn.transaction():
            await conn.execute(q.pg(s.DELETE_EXPIRED_SESSIONS), (session.created_at,))
            await conn.execute(
                q.pg(s.INSERT_SESSION), s.session_row(session_hash, session, iso=False)
            )

    async def session(self, session_hash: str) -> s.Session | None:
        row = await self._one(q.pg(s.SESSION_BY_HASH), (session_hash,))
        return None if row is None else s.session_from_row(row)

    async def end_session(self, session_hash: str) -> None:
        async with self._conn() as conn:
            await conn.execute(q.pg(s.DELETE_SESSION), (session_hash,))

    async def _all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def aclose(self) -> None:
        await self._pool.close()

    async def _one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        async with self._conn() as conn:
            return await (await conn.execute(sql, params)).fetchone()

    @staticmethod
    async def _invoice(conn: psycopg.AsyncConnection[Any], invoice_id: str) -> Invoice:
        cur = await conn.execute(q.pg(q.INVOICE_BY_ID), (invoice_id,))
        row = await cur.fetchone()
        if row is None:
            raise LedgerError(f"no invoice {invoice_id}")
        return invoice_from_row(row)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

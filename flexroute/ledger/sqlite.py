"""The embedded ledger: one SQLite file in WAL mode.

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (a commit is in the WAL
before ``record`` returns); only an OS crash or power loss can lose the last commits. Writes
run on one writer thread with group commit, so the event loop never blocks on the disk. The
store needs an asyncio event loop (the proxy and the SDK wrapper both run on one). Money is
stored as integer pico-USD so SQL sums stay exact.

Billing steps (claim, retry, settle an invoice) run in ``BEGIN IMMEDIATE`` transactions: the
file lock makes them one-at-a-time across processes, and ``UNIQUE (org_id, period)`` makes a
period's invoice exist at most once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from flexroute.errors import LedgerError
from flexroute.ledger import _sql as q
from flexroute.ledger import _sqlite_billing as billing
from flexroute.ledger import _sqlite_quota as quota
from flexroute.ledger import keys as k
from flexroute.ledger import sessions as s
from flexroute.ledger._rows import COLUMNS as _COLUMNS
from flexroute.ledger._rows import from_row as _from_row
from flexroute.ledger._rows import to_row as _to_row
from flexroute.ledger._sqlite_schema import migrate
from flexroute.ledger.base import ACTIVE, Invoice, LedgerRecord, Org, UsageRow
from flexroute.ledger.quota import Caps, Outcome, Reservation, Totals
from flexroute.money import to_pico

log = logging.getLogger("flexroute.ledger")
# How long a request waits for the writer to confirm its record: a stuck disk or a dead
# writer turns into a LedgerError, never a request that hangs for ever.
WRITE_TIMEOUT = 30.0


class SQLiteStore:
    """Records go through one writer thread that commits whatever has queued up in one
    transaction (group commit): under load many requests share a commit, and the event loop
    only pays for a queue put and a future."""

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            migrate(self._db)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the SQLite ledger at {path}: {exc}") from exc
        self._writer = threading.Thread(
            target=self._write_loop, name="flexroute-ledger", daemon=True
        )
        self._writer.start()

    async def record(self, record: LedgerRecord) -> bool:
        if not self._writer.is_alive():
            raise LedgerError("the ledger writer has stopped; the record was not written")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._queue.put(_Write(_to_row(record), loop, done))
        # One timer on the future, not wait_for(shield(...)): a third of the CPU on every
        # request. A caller cancelled meanwhile cancels ``done``; the writer skips it.
        timer = loop.call_later(WRITE_TIMEOUT, _expire, done)
        try:
            return await done
        finally:
            timer.cancel()

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            try:
                self._commit(batch)
            except Exception as exc:  # the writer outlives any one batch
                log.exception("flexroute: ledger batch failed")
                _resolve_all(batch, LedgerError(f"ledger write failed: {exc}"))

    def _commit(self, batch: list[_Write]) -> None:
        placeholders = ", ".join("?" * len(batch[0].row))
        sql = (
            f"INSERT INTO requests ({_COLUMNS}) VALUES ({placeholders}) "  # noqa: S608 -- fixed column list
            "ON CONFLICT (request_id) DO NOTHING"
        )
        results: list[bool | BaseException] = []
        try:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for write in batch:
                        results.append(self._db.execute(sql, write.row).rowcount == 1)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite ends it itself on a full disk
                        self._db.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            if len(batch) > 1:  # one bad record must not fail the others: one at a time
                for write in batch:
                    self._commit([write])
                return
            results = [LedgerError(f"ledger write failed: {exc}")]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[bool], Any]]] = {}
        for write, result in zip(batch, results, strict=True):
            by_loop.setdefault(write.loop, []).append((write.done, result))
        for loop, outcomes in by_loop.items():  # one wake-up per loop and batch
            loop.call_soon_threadsafe(_resolve, outcomes)

    async def get(self, request_id: str) -> LedgerRecord | None:
        return await anyio.to_thread.run_sync(self._get, request_id)

    def _get(self, request_id: str) -> LedgerRecord | None:
        try:
            with self._lock:
                row = self._db.execute(
                    f"SELECT {_COLUMNS} FROM requests WHERE request_id = ?",  # noqa: S608 -- fixed column list
                    (request_id,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger read failed: {exc}") from exc
        return None if row is None else _from_row(row)

    async def upgrade(self) -> int:
        return await self._read(lambda db: migrate(db))

    async def org(self, org_id: str) -> Org:
        return await self._read(billing.org, org_id)

    async def org_state(self, org_id: str) -> str:
        row = await self._read(lambda db: db.execute(q.ORG_STATE, (org_id,)).fetchone())
        return str(row[0]) if row else ACTIVE

    async def org_ids(self) -> list[str]:
        return await self._read(lambda db: sorted(r[0] for r in db.execute(q.ORG_IDS)))

    async def set_card(self, org_id: str, card_status: str, customer_ref: str | None) -> None:
        row = (org_id, card_status, customer_ref, dt.datetime.now(dt.UTC).isoformat())
        await self._write(lambda db: db.execute(q.UPSERT_CARD, row))

    async def set_state(self, org_id: str, state: str, reason: str | None) -> None:
        now = dt.datetime.now(dt.UTC).isoformat()
        await self._write(lambda db: db.execute(q.UPSERT_STATE, (org_id, state, reason, now)))

    async def claim_invoice(
        self, org_id: str, period: str, period_end: dt.datetime, threshold: Decimal
    ) -> Invoice | None:
        return await self._write(billing.claim_invoice, org_id, period, period_end, threshold)

    async def retry_invoice(self, seen: Invoice) -> Invoice | None:
        return await self._write(billing.retry_invoice, seen)

    async def settle_invoice(
        self, invoice_id: str, status: str, reason: str | None, reference: str | None
    ) -> Invoice:
        invoice = await self._write(billing.settle_invoice, invoice_id, status, reason, reference)
        if invoice is None:  # pragma: no cover -- settle never signals BelowThreshold
            raise LedgerError(f"invoice {invoice_id} could not be settled")
        return invoice

    async def invoices(self, org_id: str) -> list[Invoice]:
        return await self._read(
            lambda db: [billing.invoice_from_row(r) for r in db.execute(q.INVOICES_OF, (org_id,))]
        )

    async def usage(
        self, org_id: str | None = None, since: dt.datetime | None = None
    ) -> list[UsageRow]:
        return await self._read(billing.usage, org_id, since)

    async def invoice_usage(self, invoice_id: str) -> list[UsageRow]:
        sql = q.usage_query("substr(received_at, 1, 10)", False, False, invoice=True)
        return await self._read(
            lambda db: billing.usage_rows(db.execute(sql, (invoice_id,)).fetchall())
        )

    async def grant_credit(self, org_id: str, amount: Decimal) -> bool:
        row = (org_id, to_pico(amount), dt.datetime.now(dt.UTC).isoformat())
        done = await self._write(lambda db: db.execute(q.GRANT_CREDIT, row).rowcount)
        return done == 1

    # -- caps and reservations (flexroute.ledger.quota) ------------------------------------

    async def caps(self, org_id: str, key_id: str | None) -> tuple[Caps, Caps]:
        return await self._read(quota.caps, org_id, key_id)

    async def set_caps(self, org_id: str, key_id: str | None, caps: Caps) -> None:
        await self._write(quota.set_caps, org_id, key_id, caps)

    async def month_totals(
        self, org_id: str, key_id: str | None, since: dt.datetime
    ) -> tuple[Totals, Totals]:
        return await self._read(quota.totals, org_id, key_id, since)

    async def reserve(self, reservations: list[Reservation], since: dt.datetime) -> list[Outcome]:
        done = await self._write(quota.reserve, reservations, since)
        assert done is not None  # reserve never signals BelowThreshold
        return done

    async def release(self, reservation_ids: list[str]) -> None:
        await self._write(quota.release, reservation_ids)

    # -- gateway access (flexroute.ledger.keys) --------------------------------------------

    async def create_key(self, key: k.ApiKey, key_hash: str) -> None:
        row = (key.key_id, key.org_id, key_hash, key.tier, key.revoked, key.created_at.isoformat())
        await self._write(lambda db: db.execute(k.INSERT_KEY, row))

    async def key_by_hash(self, key_hash: str) -> k.ApiKey | None:
        row = await self._read(lambda db: db.execute(k.KEY_BY_HASH, (key_hash,)).fetchone())
        return None if row is None else k.key_from_row(row)

    async def keys(self, org_id: str | None = None) -> list[k.ApiKey]:
        sql, args = (k.KEYS_ALL, ()) if org_id is None else (k.KEYS_OF, (org_id,))
        return await self._read(lambda db: [k.key_from_row(r) for r in db.execute(sql, args)])

    async def revoke_key(self, key_id: str) -> bool:
        done = await self._write(lambda db: db.execute(k.REVOKE_KEY, (True, key_id)).rowcount)
        return done == 1

    async def has_keys(self) -> bool:
        return await self._read(lambda db: db.execute(k.ANY_KEY).fetchone() is not None)

    async def set_provider_key(self, key: k.SealedProviderKey) -> None:
        row = (key.org_id, key.provider, key.sealed, key.fingerprint, key.updated_at.isoformat())
        await self._write(lambda db: db.execute(k.UPSERT_PROVIDER_KEY, row))

    async def provider_keys(self, org_id: str | None = None) -> list[k.SealedProviderKey]:
        sql = k.PROVIDER_KEYS_ALL if org_id is None else k.PROVIDER_KEYS_OF
        args = () if org_id is None else (org_id,)
        return await self._read(
            lambda db: [k.provider_key_from_row(r) for r in db.execute(sql, args)]
        )

    async def provider_key(self, org_id: str, provider: str) -> k.SealedProviderKey | None:
        row = await self._read(lambda db: db.execute(k.PROVIDER_KEY, (org_id, provider)).fetchone())
        return None if row is None else k.provider_key_from_row(row)

    # -- the dashboard (flexroute.ledger.sessions) -----------------------------------------

    async def recent(self, org_id: str, limit: int) -> list[LedgerRecord]:
        sql = s.recent_query(_COLUMNS)
        return await self._read(lambda db: [_from_row(r) for r in db.execute(sql, (org_id, limit))])

    async def key_months(self, org_id: str, since: dt.datetime) -> dict[str, Totals]:
        args = (org_id, since.astimezone(dt.UTC).isoformat())
        return await self._read(
            lambda db: s.key_months_from_rows(db.execute(s.KEY_MONTHS, args).fetchall())
        )

    async def create_session(self, session_hash: str, session: s.Session) -> None:
        def create(db: sqlite3.Connection) -> None:
            db.execute(s.DELETE_EXPIRED_SESSIONS, (session.created_at.isoformat(),))
            db.execute(s.INSERT_SESSION, s.session_row(session_hash, session, iso=True))

        await self._write(create)

    async def session(self, session_hash: str) -> s.Session | None:
        row = await self._read(lambda db: db.execute(s.SESSION_BY_HASH, (session_hash,)).fetchone())
        return None if row is None else s.session_from_row(row)

    async def end_session(self, session_hash: str) -> None:
        await self._write(lambda db: db.execute(s.DELETE_SESSION, (session_hash,)))

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        def run() -> _T:
            try:
                with self._lock:
                    return fn(self._db, *args)
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger read failed: {exc}") from exc

        return await anyio.to_thread.run_sync(run)

    async def _write(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction; ``BelowThreshold`` rolls back."""

        def run() -> _T | None:
            try:
                with self._lock:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(self._db, *args)
                    except billing.BelowThreshold:
                        self._db.execute("ROLLBACK")
                        return None
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
                    return result
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger write failed: {exc}") from exc

        return await anyio.to_thread.run_sync(run)

    async def aclose(self) -> None:
        self._queue.put(None)
        await anyio.to_thread.run_sync(self._writer.join)
        with self._lock:
            self._db.close()


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Write:
    row: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[bool]


def _expire(done: asyncio.Future[bool]) -> None:
    if not done.done():
        done.set_exception(
            LedgerError(f"the ledger did not confirm the write within {WRITE_TIMEOUT:g} s")
        )


def _resolve_all(batch: list[_Write], error: BaseException) -> None:
    for write in batch:
        outcome: list[tuple[asyncio.Future[bool], bool | BaseException]] = [(write.done, error)]
        write.loop.call_soon_threadsafe(_resolve, outcome)


def _resolve(outcomes: list[tuple[asyncio.Future[bool], bool | BaseException]]) -> None:
    for done, result in outcomes:
        if done.done():
            continue
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set_result(result)

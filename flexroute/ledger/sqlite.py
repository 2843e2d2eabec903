"""The embedded ledger: one SQLite file in WAL mode.

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (a commit is in the WAL
before ``record`` returns); only an OS crash or power loss can lose the last commits. Writes
run on one writer thread with group commit, so the event loop never blocks on the disk. The
store needs an asyncio event loop (the proxy and the SDK wrapper both run on one). Money is
stored as integer pico-USD so SQL sums stay exact.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from flexroute.errors import LedgerError
from flexroute.ledger.base import LedgerRecord
from flexroute.money import from_pico, to_pico
from flexroute.usage import Usage

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        request_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        key_id TEXT,
        provider TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT,
        route TEXT NOT NULL,
        reason TEXT,
        tier_requested TEXT,
        tier_served TEXT,
        start_within_ms INTEGER,
        flex_wait_ms INTEGER,
        attempts INTEGER NOT NULL,
        usage_json TEXT,
        standard_cost_pico INTEGER,
        actual_cost_pico INTEGER,
        saving_pico INTEGER NOT NULL,
        fee_pico INTEGER NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        received_at TEXT NOT NULL,
        completed_at TEXT NOT NULL,
        attempt_log_json TEXT NOT NULL
    ) STRICT;
    CREATE INDEX requests_org_received ON requests (org_id, received_at);
    """,
)

_COLUMNS = (
    "request_id, org_id, key_id, provider, endpoint, model, route, reason, tier_requested, "
    "tier_served, start_within_ms, flex_wait_ms, attempts, usage_json, standard_cost_pico, "
    "actual_cost_pico, saving_pico, fee_pico, status, http_status, received_at, completed_at, "
    "attempt_log_json"
)


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
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        self._queue.put(_Write(_to_row(record), loop, done))
        return await asyncio.shield(done)

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
            self._commit(batch)

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
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            error = LedgerError(f"ledger write failed: {exc}")
            results = [error] * len(batch)
        for write, result in zip(batch, results, strict=True):
            write.loop.call_soon_threadsafe(_resolve, write.done, result)

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

    async def aclose(self) -> None:
        self._queue.put(None)
        await anyio.to_thread.run_sync(self._writer.join)
        with self._lock:
            self._db.close()


@dataclass(frozen=True, slots=True)
class _Write:
    row: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[bool]


def _resolve(done: asyncio.Future[bool], result: bool | BaseException) -> None:
    if done.done():
        return
    if isinstance(result, BaseException):
        done.set_exception(result)
    else:
        done.set_result(result)


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations this file has not seen yet (tracked in ``user_version``)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")


def _pico(amount: Any) -> int | None:
    return None if amount is None else to_pico(amount)


def _to_row(r: LedgerRecord) -> tuple[Any, ...]:
    return (
        r.request_id,
        r.org_id,
        r.key_id,
        r.provider,
        r.endpoint,
        r.model,
        r.route,
        r.reason,
        r.tier_requested,
        r.tier_served,
        r.start_within_ms,
        r.flex_wait_ms,
        r.attempts,
        None if r.usage is None else json.dumps(r.usage.as_dict()),
        _pico(r.standard_cost),
        _pico(r.actual_cost),
        to_pico(r.saving),
        to_pico(r.fee),
        r.status,
        r.http_status,
        r.received_at.isoformat(),
        r.completed_at.isoformat(),
        json.dumps(list(r.attempt_log)),
    )


def _from_row(row: tuple[Any, ...]) -> LedgerRecord:
    (request_id, org_id, key_id, provider, endpoint, model, route, reason, tier_requested,
     tier_served, start_within_ms, flex_wait_ms, attempts, usage_json, standard, actual, saving,
     fee, status, http_status, received_at, completed_at, attempt_log_json) = row  # fmt: skip
    return LedgerRecord(
        request_id=request_id,
        org_id=org_id,
        key_id=key_id,
        provider=provider,
        endpoint=endpoint,
        model=model,
        route=route,
        reason=reason,
        tier_requested=tier_requested,
        tier_served=tier_served,
        start_within_ms=start_within_ms,
        flex_wait_ms=flex_wait_ms,
        attempts=attempts,
        usage=None if usage_json is None else Usage(**json.loads(usage_json)),
        standard_cost=None if standard is None else from_pico(standard),
        actual_cost=None if actual is None else from_pico(actual),
        saving=from_pico(saving),
        fee=from_pico(fee),
        status=status,
        http_status=http_status,
        received_at=dt.datetime.fromisoformat(received_at),
        completed_at=dt.datetime.fromisoformat(completed_at),
        attempt_log=tuple(json.loads(attempt_log_json)),
    )

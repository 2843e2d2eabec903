"""The embedded SQLite ledger: exact money, one record per request id, durable on return."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import anyio
import pytest

from flexroute.errors import ConfigError
from flexroute.ledger import LedgerRecord, open_store
from flexroute.usage import Usage

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def record(request_id: str, fee: str = "0.000000123") -> LedgerRecord:
    return LedgerRecord(
        request_id=request_id,
        provider="openai",
        endpoint="/v1/chat/completions",
        model="gpt-5-mini",
        route="flex",
        reason=None,
        tier_requested=None,
        tier_served="flex",
        start_within_ms=30000,
        flex_wait_ms=120,
        attempts=1,
        usage=Usage(input_tokens=1000, output_tokens=50, cached_input_tokens=200),
        standard_cost=Decimal("0.000350250000"),
        actual_cost=Decimal("0.000175125000"),
        saving=Decimal("0.000175125"),
        fee=Decimal(fee),
        status="ok",
        http_status=200,
        received_at=NOW,
        completed_at=NOW,
        attempt_log=(
            {
                "tier": "flex",
                "began_ms": 0.1,
                "ended_ms": 120.0,
                "outcome": "started",
                "status": 200,
            },
        ),
    )


class TestSQLiteStore:
    def test_round_trips_a_record_exactly(self, tmp_path: Path) -> None:
        """What is written is read back field for field, money exact."""

        async def main() -> None:
            store = open_store(f"sqlite:///{tmp_path / 'l.sqlite3'}")
            assert await store.record(record("r1"))
            assert await store.get("r1") == record("r1")
            assert await store.get("nope") is None
            await store.aclose()

        anyio.run(main)

    def test_writes_each_request_id_once(self, tmp_path: Path) -> None:
        """A second write of the same id changes nothing and says so."""

        async def main() -> None:
            store = open_store(f"sqlite:///{tmp_path / 'l.sqlite3'}")
            assert await store.record(record("r1", fee="0.000000001"))
            assert not await store.record(record("r1", fee="0.999999999"))
            stored = await store.get("r1")
            assert stored is not None
            assert stored.fee == Decimal("0.000000001")
            await store.aclose()

        anyio.run(main)

    def test_concurrent_writes_all_land(self, tmp_path: Path) -> None:
        """Hundreds of writes in flight at once share commits and none is lost."""
        path = tmp_path / "l.sqlite3"

        async def main() -> None:
            store = open_store(f"sqlite:///{path}")
            async with anyio.create_task_group() as group:
                for i in range(300):
                    group.start_soon(store.record, record(f"r{i}"))
            await store.aclose()

        anyio.run(main)
        with sqlite3.connect(path) as db:
            count, fees = db.execute("SELECT COUNT(*), SUM(fee_pico) FROM requests").fetchone()
        assert count == 300
        assert fees == 300 * 123_000  # pico-USD: sums in SQL are exact

    def test_a_returned_write_survives_sigkill(self, tmp_path: Path) -> None:
        """Once record() returns, killing the process cannot lose the record."""
        path = tmp_path / "l.sqlite3"
        script = textwrap.dedent(f"""
            import anyio, os, sys
            from tests.test_ledger_sqlite import record
            from flexroute.ledger import open_store
            async def main():
                store = open_store("sqlite:///{path}")
                await store.record(record("survivor"))
                print("written", flush=True)
                await anyio.sleep(60)
            anyio.run(main)
        """)
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT request_id FROM requests").fetchall() == [("survivor",)]

    def test_an_unsupported_database_url_is_a_clear_error(self) -> None:
        """A URL flexroute cannot open names itself and the accepted form."""
        with pytest.raises(ConfigError, match="sqlite:///"):
            open_store("mysql://localhost/x")

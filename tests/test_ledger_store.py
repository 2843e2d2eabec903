"""Both ledger backends, SQLite and the real PostgreSQL: records, balances, invoices, usage."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import anyio

from flexroute.ledger import ACTIVE, PAST_DUE, LedgerRecord, Store, open_store, period_of
from tests.test_ledger_sqlite import record

ROOT = Path(__file__).parent.parent
NOV = dt.datetime(2026, 11, 10, 12, 0, tzinfo=dt.UTC)
THRESHOLD = Decimal(20)


def fee(request_id: str, org: str, amount: str, at: dt.datetime = NOV) -> LedgerRecord:
    return dataclasses.replace(
        record(request_id, fee=amount), org_id=org, received_at=at, completed_at=at
    )


def run(url: str, steps: object) -> None:
    async def main() -> None:
        store = open_store(url)
        try:
            await steps(store)  # type: ignore[operator]
        finally:
            await store.aclose()

    anyio.run(main)


class TestRecords:
    def test_round_trips_and_writes_each_id_once(self, store_url: str) -> None:
        """A record reads back exactly; a second write of its id changes nothing."""

        async def steps(store: Store) -> None:
            assert await store.record(record("r1"))
            assert not await store.record(record("r1", fee="0.999999999"))
            assert await store.get("r1") == record("r1")
            assert await store.get("nope") is None

        run(store_url, steps)

    def test_concurrent_writes_all_land(self, store_url: str) -> None:
        """Two hundred writes in flight at once all land; the balance is their exact sum."""

        async def steps(store: Store) -> None:
            async with anyio.create_task_group() as group:
                for i in range(200):
                    group.start_soon(store.record, fee(f"r{i}", "acme", "0.000000123"))
            org = await store.org("acme")
            assert org.unpaid_balance == Decimal("0.000000123") * 200

        run(store_url, steps)

    def test_upgrade_is_idempotent(self, store_url: str) -> None:
        """Migrations run on start; running them again is a no-op at the same version."""

        async def steps(store: Store) -> None:
            first = await store.upgrade()
            assert await store.upgrade() == first >= 1

        run(store_url, steps)


class TestInvoices:
    def test_a_period_is_claimed_once_and_covers_its_fees(self, store_url: str) -> None:
        """The first claim takes every uncharged fee before the period's end; a second none."""

        async def steps(store: Store) -> None:
            await store.record(fee("a", "acme", "15"))
            await store.record(fee("b", "acme", "8.5"))
            await store.record(fee("dec", "acme", "3", NOV + dt.timedelta(days=30)))
            period, end = period_of(NOV)
            invoice = await store.claim_invoice("acme", period, end, THRESHOLD)
            assert invoice is not None
            assert invoice.period == "2026-11"
            assert invoice.amount == Decimal("23.5")
            assert invoice.status == "charging"
            assert await store.claim_invoice("acme", period, end, THRESHOLD) is None
            org = await store.org("acme")
            assert org.unpaid_balance == Decimal("26.5")  # invoice unpaid + December's fee

        run(store_url, steps)

    def test_under_the_threshold_carries_over(self, store_url: str) -> None:
        """A balance under $20 is not invoiced and stays unpaid for the next month."""

        async def steps(store: Store) -> None:
            await store.record(fee("a", "acme", "19.999999999"))
            period, end = period_of(NOV)
            assert await store.claim_invoice("acme", period, end, THRESHOLD) is None
            assert await store.invoices("acme") == []
            assert (await store.org("acme")).unpaid_balance == Decimal("19.999999999")
            await store.record(fee("b", "acme", "0.000000001", NOV + dt.timedelta(days=30)))
            period, end = period_of(NOV + dt.timedelta(days=30))
            invoice = await store.claim_invoice("acme", period, end, THRESHOLD)
            assert invoice is not None
            assert invoice.amount == 20

        run(store_url, steps)

    def test_failure_makes_past_due_and_payment_clears_it(self, store_url: str) -> None:
        """A failed charge sets past-due with its reason; a paid retry clears it at once."""

        async def steps(store: Store) -> None:
            await store.record(fee("a", "acme", "23.4"))
            period, end = period_of(NOV)
            invoice = await store.claim_invoice("acme", period, end, THRESHOLD)
            assert invoice is not None
            await store.settle_invoice(invoice.invoice_id, "failed", "card_declined", "pi_1")
            org = await store.org("acme")
            assert (org.state, org.reason) == (PAST_DUE, "card_declined")
            assert org.amount_due == Decimal("23.4")
            [failed] = await store.invoices("acme")
            retry = await store.retry_invoice(failed)
            assert retry is not None
            assert (retry.attempts, retry.reference) == (2, None)
            assert retry.idempotency_key != invoice.idempotency_key
            assert await store.retry_invoice(failed) is None  # one retrier only
            await store.settle_invoice(invoice.invoice_id, "paid", None, "pi_2")
            org = await store.org("acme")
            assert (org.state, org.reason, org.unpaid_balance) == (ACTIVE, None, Decimal(0))

        run(store_url, steps)


class TestUsage:
    def test_totals_by_day_model_and_route_with_filters(self, store_url: str) -> None:
        """Usage groups by UTC day, model and route; org and since filters apply."""

        async def steps(store: Store) -> None:
            await store.record(fee("a", "acme", "1"))
            await store.record(fee("b", "acme", "2"))
            await store.record(fee("c", "other", "4", NOV + dt.timedelta(days=1)))
            rows = await store.usage()
            assert [(r.day, r.requests, r.fee) for r in rows] == [
                ("2026-11-10", 2, Decimal(3)),
                ("2026-11-11", 1, Decimal(4)),
            ]
            assert [r.fee for r in await store.usage("other")] == [4]
            assert [r.fee for r in await store.usage(since=NOV + dt.timedelta(hours=1))] == [4]

        run(store_url, steps)


class TestConcurrentBillingRuns:
    def test_two_processes_charge_each_due_org_once(self, store_url: str) -> None:
        """Two `flexroute billing run` processes at once: every due org is charged by one."""
        orgs = [f"org{i}" for i in range(25)]

        async def seed(store: Store) -> None:
            for i, org in enumerate(orgs):
                await store.record(fee(f"{org}-a", org, "12"))
                await store.record(fee(f"{org}-b", org, "9" if i % 5 else "1"))  # every 5th: $13

        run(store_url, seed)
        env = {**os.environ, "FLEXROUTE_DATABASE_URL": store_url}
        command = [sys.executable, "-m", "flexroute.cli", "billing", "run", "--at", "2026-11-20"]
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=ROOT) for _ in range(2)
        ]
        outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        charged = sorted(o["org_id"] for out in outputs for o in out)
        assert charged == sorted(org for i, org in enumerate(orgs) if i % 5)

        async def check(store: Store) -> None:
            for i, org in enumerate(orgs):
                invoices = await store.invoices(org)
                assert len(invoices) == (1 if i % 5 else 0), org
                assert sum(inv.amount for inv in invoices) == (21 if i % 5 else 0)

        run(store_url, check)

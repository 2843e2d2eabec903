"""What the dashboard reads and writes in both stores: sessions by hash with expiry, an org's
latest records, each key's month, and the fees one invoice covers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal

import anyio

from flexroute.ledger import Store, open_store
from flexroute.ledger.sessions import Session, hash_session
from tests.test_ledger_sqlite import record


def run(url: str, steps: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = open_store(url)
        try:
            await steps(store)
        finally:
            await store.aclose()

    anyio.run(main)


NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


class TestSessions:
    def test_session_is_found_by_hash_only(self, store_url: str) -> None:
        """A session is stored under its id's hash and read back with org, key and expiry."""

        async def steps(store: Store) -> None:
            session = Session("acme", "key_1", NOW, NOW + dt.timedelta(hours=1))
            await store.create_session(hash_session("secret-id"), session)
            assert await store.session(hash_session("secret-id")) == session
            assert await store.session("secret-id") is None  # the raw id is not a key

        run(store_url, steps)

    def test_operator_session_has_no_org(self, store_url: str) -> None:
        """The operator's session is stored with no organisation and no key."""

        async def steps(store: Store) -> None:
            session = Session(None, None, NOW, NOW + dt.timedelta(hours=1))
            await store.create_session(hash_session("op"), session)
            found = await store.session(hash_session("op"))
            assert found is not None
            assert found.operator

        run(store_url, steps)

    def test_end_session_deletes_it(self, store_url: str) -> None:
        """Signing out removes the row."""

        async def steps(store: Store) -> None:
            await store.create_session(hash_session("a"), Session("acme", "k", NOW, NOW))
            await store.end_session(hash_session("a"))
            assert await store.session(hash_session("a")) is None

        run(store_url, steps)

    def test_expired_sessions_are_purged_by_the_next_sign_in(self, store_url: str) -> None:
        """Writing a session deletes every session already past its expiry."""

        async def steps(store: Store) -> None:
            old = Session("acme", "k", NOW - dt.timedelta(hours=2), NOW - dt.timedelta(hours=1))
            await store.create_session(hash_session("old"), old)
            await store.create_session(hash_session("new"), Session("acme", "k", NOW, NOW))
            assert await store.session(hash_session("old")) is None
            assert await store.session(hash_session("new")) is not None

        run(store_url, steps)


class TestRecent:
    def test_latest_records_of_one_org_newest_first(self, store_url: str) -> None:
        """``recent`` returns that organisation's records only, newest first, at most ``limit``."""

        async def steps(store: Store) -> None:
            for n in range(5):
                at = NOW + dt.timedelta(seconds=n)
                mine = dataclasses.replace(record(f"r{n}"), org_id="acme", received_at=at)
                await store.record(mine)
                await store.record(dataclasses.replace(mine, request_id=f"o{n}", org_id="other"))
            found = await store.recent("acme", 3)
            assert [r.request_id for r in found] == ["r4", "r3", "r2"]
            assert {r.org_id for r in found} == {"acme"}

        run(store_url, steps)


class TestInvoiceUsage:
    def test_only_the_invoices_fees_by_day_model_and_route(self, store_url: str) -> None:
        """``invoice_usage`` totals exactly the records the invoice claimed, no later ones."""

        async def steps(store: Store) -> None:
            await store.record(dataclasses.replace(record("a", fee="15"), org_id="acme"))
            await store.record(dataclasses.replace(record("b", fee="10"), org_id="acme"))
            end = NOW + dt.timedelta(days=1)
            invoice = await store.claim_invoice("acme", "2026-12", end, Decimal(20))
            assert invoice is not None
            later = dataclasses.replace(record("c", fee="7"), org_id="acme", received_at=end)
            await store.record(later)
            [row] = await store.invoice_usage(invoice.invoice_id)
            assert (row.requests, row.fee, row.model) == (2, Decimal(25), "gpt-5-mini")

        run(store_url, steps)


class TestKeyMonths:
    def test_each_keys_month_as_month_totals_says_in_one_query(self, store_url: str) -> None:
        """``key_months`` gives every key of the org what ``month_totals`` gives that key,
        leaving out records before ``since``, another org's, and those with no key."""

        async def steps(store: Store) -> None:
            since = NOW - dt.timedelta(hours=1)
            rows = [
                ("a1", "acme", "k1", "2", NOW),
                ("a2", "acme", "k1", "3", NOW),
                ("a3", "acme", "k2", "5", NOW),
                ("a4", "acme", "k1", "7", since - dt.timedelta(seconds=1)),  # before since
                ("a5", "acme", None, "11", NOW),  # sidecar mode: no key
                ("o1", "other", "k1", "13", NOW),  # another org's record
            ]
            for request_id, org, key, fee, at in rows:
                one = record(request_id, fee=fee)
                await store.record(dataclasses.replace(one, org_id=org, key_id=key, received_at=at))
            months = await store.key_months("acme", since)
            assert set(months) == {"k1", "k2"}
            for key_id, month in months.items():
                assert month == (await store.month_totals("acme", key_id, since))[1]
            assert months["k1"].fees == Decimal(5)
            assert months["k1"].spend == Decimal("0.00035025")  # 2 × actual_cost

        run(store_url, steps)

"""The Stripe processor against localstripe (a stateful fake Stripe server) with test cards."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
import stripe

from flexroute.billing.cards import add_card
from flexroute.billing.run import billing_run
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.billing.webhooks import handle_event
from flexroute.errors import PaymentError
from flexroute.ledger import ACTIVE, PAST_DUE, Invoice, Org, Store, open_store, period_of
from tests.test_billing import age
from tests.test_ledger_sqlite import record

SUCCEEDS, ATTACH_DECLINED, CHARGE_DECLINED = (
    "4242424242424242",
    "4000000000000002",
    "4000000000000341",
)
NOV = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
SECRET = "whsec_test_secret"


def payment_method(base: str, number: str) -> str:
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": base})
    card: Any = {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    return str(client.v1.payment_methods.create(params={"type": "card", "card": card}).id)


def with_store(tmp_path: Path, steps: object) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'l.sqlite3'}")
        try:
            await steps(store)  # type: ignore[operator]
        finally:
            await store.aclose()

    anyio.run(main)


async def owe(store: Store, org: str, amount: str) -> None:
    await store.record(dataclasses.replace(record(f"{org}-fee", fee=amount), org_id=org))


class TestStripeProcessor:
    def test_a_card_on_file_is_charged_off_session(self, localstripe: str, tmp_path: Path) -> None:
        """With a good card the monthly run's PaymentIntent succeeds and the invoice is paid."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe)

        async def steps(store: Store) -> None:
            await owe(store, "good", "23.4")
            org = await add_card(store, processor, "good", payment_method(localstripe, SUCCEEDS))
            assert (org.card_status, org.state) == ("valid", ACTIVE)
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            assert outcome.invoice is not None
            assert outcome.invoice.status == "paid"
            assert outcome.invoice.reference is not None
            assert outcome.invoice.reference.startswith("pi_")
            assert (await store.org("good")).unpaid_balance == 0
            assert await billing_run(store, processor, at=NOV, threshold=Decimal(20)) == []

        with_store(tmp_path, steps)

    def test_declined_charge_is_past_due_until_a_new_card_pays(
        self, localstripe: str, tmp_path: Path
    ) -> None:
        """A declined charge makes the org past-due; a new card retries and clears it."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe)
        changed: list[str] = []

        async def steps(store: Store) -> None:
            await owe(store, "bad", "30")
            await add_card(store, processor, "bad", payment_method(localstripe, CHARGE_DECLINED))
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            assert outcome.invoice is not None
            assert outcome.invoice.status == "failed"
            assert outcome.invoice.reason == "card_declined"
            org = await store.org("bad")
            assert (org.state, org.reason) == (PAST_DUE, "card_declined")
            assert org.amount_due == 30
            declined = await add_card(
                store, processor, "bad", payment_method(localstripe, ATTACH_DECLINED)
            )
            assert (declined.card_status, declined.state) == ("declined", PAST_DUE)
            good = payment_method(localstripe, SUCCEEDS)
            org = await add_card(store, processor, "bad", good, changed.append)
            assert (org.state, org.reason) == (ACTIVE, None)
            assert org.unpaid_balance == 0
            [invoice] = await store.invoices("bad")
            assert (invoice.status, invoice.attempts) == ("paid", 2)
            assert changed == ["bad", "bad"]

        with_store(tmp_path, steps)

    def test_a_charge_due_with_no_card_is_past_due(self, localstripe: str, tmp_path: Path) -> None:
        """No card on file: the charge fails with reason no_card, without asking Stripe."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe)

        async def steps(store: Store) -> None:
            await owe(store, "nocard", "20")
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            assert outcome.invoice is not None
            assert outcome.invoice.reason == "no_card"
            assert (await store.org("nocard")).state == PAST_DUE

        with_store(tmp_path, steps)


def signed(payload: bytes, secret: str = SECRET) -> str:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


class TestWebhooks:
    def test_payment_results_settle_invoices_and_bad_signatures_are_refused(
        self, localstripe: str, tmp_path: Path
    ) -> None:
        """A signed payment_intent.succeeded settles the invoice; a forged one is rejected."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe, webhook_secret=SECRET)

        async def steps(store: Store) -> None:
            await owe(store, "hook", "25")
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            assert outcome.invoice is not None
            assert outcome.invoice.reason == "no_card"
            event = {
                "id": "evt_1",
                "object": "event",
                "type": "payment_intent.succeeded",
                "data": {
                    "object": {
                        "id": "pi_from_hook",
                        "object": "payment_intent",
                        "metadata": {"org_id": "hook", "invoice_id": outcome.invoice.invoice_id},
                    }
                },
            }
            payload = json.dumps(event).encode()
            with pytest.raises(PaymentError):
                await handle_event(store, processor, payload, signed(payload, "whsec_wrong"))
            assert (await store.org("hook")).state == PAST_DUE
            done = await handle_event(store, processor, payload, signed(payload))
            assert done.startswith("settled")
            org = await store.org("hook")
            assert org.state == ACTIVE
            assert org.unpaid_balance == 0
            again = await handle_event(store, processor, payload, signed(payload))
            assert again == "ignored: settled already"

        with_store(tmp_path, steps)


def charges_of(base: str, customer: str | None) -> list[Any]:
    assert customer is not None
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": base})
    return list(client.v1.charges.list(params={"customer": customer}).data)


async def claimed_with_card(
    store: Store, processor: StripeProcessor, base: str, org_id: str, owed: str
) -> tuple[Org, Invoice]:
    """An organisation owing ``owed`` with a good card, its November invoice claimed."""
    await owe(store, org_id, owed)
    org = await add_card(store, processor, org_id, payment_method(base, SUCCEEDS))
    period, end = period_of(NOV)
    invoice = await store.claim_invoice(org_id, period, end, Decimal(20))
    assert invoice is not None
    assert org.customer_ref is not None
    return org, invoice


class TestAStaleInvoiceIsNeverChargedTwice:
    """A run that died mid-charge leaves its invoice ``charging``; a run a day later (past
    Stripe's idempotency window, so the old key would charge again) asks Stripe first."""

    def test_one_stripe_already_charged_is_settled_from_that_charge(
        self, localstripe: str, tmp_path: Path
    ) -> None:
        """The earlier attempt's PaymentIntent succeeded: the invoice is paid with it, and
        Stripe holds one charge, not two."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe)

        async def steps(store: Store) -> None:
            org, invoice = await claimed_with_card(store, processor, localstripe, "crashed", "23.4")
            first = await processor.charge(  # the run died before it wrote this down
                org, invoice.amount, idempotency_key=invoice.idempotency_key,
                invoice_id=invoice.invoice_id,
            )  # fmt: skip
            assert first.status == "succeeded"
            age(tmp_path / "l.sqlite3", hours=25)
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            assert outcome.invoice is not None
            assert (outcome.invoice.status, outcome.invoice.reference) == ("paid", first.reference)
            assert outcome.invoice.attempts == 1
            assert len(charges_of(localstripe, org.customer_ref)) == 1
            assert (await store.org("crashed")).unpaid_balance == 0

        with_store(tmp_path, steps)

    def test_one_stripe_never_charged_is_charged_once_under_a_new_key(
        self, localstripe: str, tmp_path: Path
    ) -> None:
        """No earlier attempt took the money: the invoice is charged as attempt 2, once."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe)

        async def steps(store: Store) -> None:
            # ... and the run died before it asked Stripe
            org, invoice = await claimed_with_card(store, processor, localstripe, "cut", "30")
            age(tmp_path / "l.sqlite3", hours=25)
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            assert outcome.invoice is not None
            assert (outcome.invoice.status, outcome.invoice.attempts) == ("paid", 2)
            assert outcome.invoice.idempotency_key != invoice.idempotency_key
            assert len(charges_of(localstripe, org.customer_ref)) == 1
            assert await billing_run(store, processor, at=NOV, threshold=Decimal(20)) == []

        with_store(tmp_path, steps)


def payment_event(
    kind: str, intent: str, org: str, invoice_id: str, created: int, attempt_key: str | None = None
) -> bytes:
    metadata = {"org_id": org, "invoice_id": invoice_id}
    if attempt_key is not None:
        metadata["attempt_key"] = attempt_key
    obj: dict[str, Any] = {"id": intent, "object": "payment_intent", "metadata": metadata}
    if kind == "payment_intent.payment_failed":
        obj["last_payment_error"] = {"code": "card_declined"}
    event = {"id": f"evt_{intent}_{kind}", "object": "event", "type": kind,
             "created": created, "data": {"object": obj}}  # fmt: skip
    return json.dumps(event).encode()


class TestWebhookOrder:
    def test_an_older_attempts_failure_arriving_late_changes_nothing(
        self, localstripe: str, tmp_path: Path
    ) -> None:
        """Attempt 1 was declined; attempt 2 (a new card) is under way: attempt 1's failure
        event, delivered late, leaves the invoice charging; attempt 2's success pays it, and
        attempt 1's failure after that changes nothing either."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe, webhook_secret=SECRET)

        async def steps(store: Store) -> None:
            await owe(store, "late", "25")
            await add_card(store, processor, "late", payment_method(localstripe, CHARGE_DECLINED))
            [outcome] = await billing_run(store, processor, at=NOV, threshold=Decimal(20))
            declined = outcome.invoice
            assert declined is not None
            assert (declined.status, declined.reason) == ("failed", "card_declined")
            customer = (await store.org("late")).customer_ref
            assert customer is not None
            [charge] = charges_of(localstripe, customer)
            attempt_1 = str(charge.payment_intent)  # attempt 1's PaymentIntent
            newer = await store.retry_invoice(declined)  # attempt 2, in flight
            assert newer is not None
            created = int(time.time())
            old = payment_event(
                "payment_intent.payment_failed", attempt_1, "late",
                declined.invoice_id, created - 60,
            )  # fmt: skip
            done = await handle_event(store, processor, old, signed(old))
            assert done.startswith("ignored")
            [invoice] = await store.invoices("late")
            assert (invoice.status, invoice.attempts) == ("charging", 2)
            paid = payment_event(
                "payment_intent.succeeded", "pi_attempt_2", "late", declined.invoice_id, created
            )
            assert (await handle_event(store, processor, paid, signed(paid))).startswith("settled")
            assert (await handle_event(store, processor, old, signed(old))).startswith("ignored")
            [invoice] = await store.invoices("late")
            assert (invoice.status, invoice.reference) == ("paid", "pi_attempt_2")
            assert (await store.org("late")).state == ACTIVE

        with_store(tmp_path, steps)

    def test_a_failure_of_the_current_attempt_still_counts(
        self, localstripe: str, tmp_path: Path
    ) -> None:
        """A failure event naming the invoice's current attempt (its key) makes it past-due;
        one naming the attempt before is ignored."""
        processor = StripeProcessor("sk_test_x", api_base=localstripe, webhook_secret=SECRET)

        async def steps(store: Store) -> None:
            await owe(store, "async", "25")
            period, end = period_of(NOV)
            invoice = await store.claim_invoice("async", period, end, Decimal(20))
            assert invoice is not None  # attempt 1, charging
            created = int(time.time())
            older = payment_event(
                "payment_intent.payment_failed", "pi_0", "async", invoice.invoice_id, created,
                attempt_key=invoice.idempotency_key.removesuffix("-1") + "-0",
            )  # fmt: skip
            assert (await handle_event(store, processor, older, signed(older))).startswith(
                "ignored"
            )
            current = payment_event(
                "payment_intent.payment_failed", "pi_1", "async", invoice.invoice_id, created,
                attempt_key=invoice.idempotency_key,
            )  # fmt: skip
            assert (await handle_event(store, processor, current, signed(current))).startswith(
                "settled"
            )
            [failed] = await store.invoices("async")
            assert (failed.status, failed.reason, failed.reference) == (
                "failed", "card_declined", "pi_1",
            )  # fmt: skip
            assert (await store.org("async")).state == PAST_DUE

        with_store(tmp_path, steps)


@contextlib.contextmanager
def silent_stripe() -> Iterator[str]:
    """A loopback address that takes connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


SILENT_ORG = Org("acme", ACTIVE, card_status="valid", customer_ref="cus_silent")


class TestSilentStripe:
    def test_a_call_stripe_never_answers_ends_with_payment_error(self) -> None:
        """A Stripe that takes the connection and says nothing: PaymentError within the
        timeout and Stripe's retries, not after its SDK's 80 s a try."""
        with silent_stripe() as base:
            processor = StripeProcessor("sk_test_x", api_base=base, timeout=0.5)
            began = time.monotonic()
            with pytest.raises(PaymentError):
                anyio.run(processor.default_card, SILENT_ORG)
        assert time.monotonic() - began < 15

    def test_hung_stripe_calls_leave_the_stores_threads_free(self) -> None:
        """Fifty Stripe calls waiting on a silent Stripe take none of the worker threads the
        SQLite store reads on: a thread call beside them starts at once."""

        async def main() -> float:
            processor = StripeProcessor("sk_test_x", api_base=base, timeout=3.0)

            async def card() -> None:
                with contextlib.suppress(PaymentError):
                    await processor.default_card(SILENT_ORG)

            async with anyio.create_task_group() as group:
                for _ in range(50):
                    group.start_soon(card)
                await anyio.sleep(0.3)
                began = time.monotonic()
                await anyio.to_thread.run_sync(time.sleep, 0)
                waited = time.monotonic() - began
                group.cancel_scope.cancel()
            return waited

        with silent_stripe() as base:
            assert anyio.run(main) < 1.0

"""The Stripe processor against localstripe (a stateful fake Stripe server) with test cards."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import time
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
from flexroute.ledger import ACTIVE, PAST_DUE, Store, open_store
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

"""The Billing and operator pages over HTTP against a gateway-mode proxy, the emulator and
localstripe: a saved card clears past-due at once, a card declined on charging shows the
decline, invoices download as CSV, the operator marks an organisation paid."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest
import stripe

from flexroute.config import Settings
from tests.dashboard_env import flex, flex_status, form_token, make_past_due, sign_in
from tests.gateway_env import Gateway, gateway_settings, running_gateway

GOOD, DECLINED_ON_CHARGE = "4242424242424242", "4000000000000341"
ADMIN = "admin-test-key-0123456789"


def stripe_settings(tmp_path: Path, emulator_url: str, localstripe: str) -> Settings:
    return gateway_settings(
        tmp_path,
        emulator_url,
        admin_key=ADMIN,
        payment_processor="stripe",
        stripe_api_key="sk_test_dashboard",
        stripe_api_base=localstripe,
        stripe_publishable_key="pk_test_dashboard",
        stripe_js_url=f"{localstripe}/js.stripe.com/v3/",
    )


def past_due(gateway: Gateway, org: str, amount: str) -> None:
    make_past_due(gateway.settings.database_url, gateway.settings.stripe_api_base, org, amount)


def flex_error(gateway: Gateway, org: str = "acme") -> dict[str, Any]:
    """The error body of a flex request that must fail."""
    with pytest.raises(openai.APIStatusError) as refused:
        flex(gateway.openai(org))
    body: dict[str, Any] = refused.value.body  # type: ignore[assignment]
    return body


def confirm_setup(localstripe: str, client_secret: str, number: str) -> str:
    """What Stripe.js does in the browser: confirm the SetupIntent with the card."""
    client = stripe.StripeClient("sk_test_dashboard", base_addresses={"api": localstripe})
    intent_id = client_secret.split("_secret_")[0]
    card: Any = {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    params: Any = {"payment_method_data": {"type": "card", "card": card}}
    return str(client.v1.setup_intents.confirm(intent_id, params=params).id)


@pytest.fixture
def gateway(tmp_path: Path, emulator: Any, localstripe: str) -> Iterator[Gateway]:
    emulator.reset()
    with running_gateway(stripe_settings(tmp_path, emulator.base_url, localstripe)) as running:
        yield running


def add_card(gateway: Gateway, dash: httpx.Client, localstripe: str, number: str) -> str:
    csrf = form_token(dash, "/dashboard/billing")
    setup = dash.post("/dashboard/billing/setup", headers={"x-csrf-token": csrf})
    assert setup.status_code == 200, setup.text
    assert setup.json()["publishable_key"] == "pk_test_dashboard"
    intent = confirm_setup(localstripe, setup.json()["client_secret"], number)
    saved = dash.post("/dashboard/billing/card", data={"setup_intent": intent, "csrf_token": csrf})
    assert saved.status_code == 200
    return saved.text


class TestCards:
    def test_a_good_card_clears_past_due_at_once(self, gateway: Gateway, localstripe: str) -> None:
        """Past-due gets 402 for flex; after a card is saved the very next flex request is 200."""
        make_past_due(
            gateway.settings.database_url, gateway.settings.stripe_api_base, "acme", "23.4"
        )
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        assert "$23.40" in dash.get("/dashboard/billing").text
        anyio.run(anyio.sleep, 2.2)  # the proxy's gate cache predates make_past_due
        error = flex_error(gateway)
        assert "on the Billing page" in error["message"]
        named = dash.get(error["billing_url"])  # the 402 names the page that clears it
        assert named.status_code == 200
        assert 'id="card-form"' in named.text
        page = add_card(gateway, dash, localstripe, GOOD)
        assert "Card saved" in page
        assert flex_status(gateway.openai()) == 200  # no wait: the gate forgot the org's old state
        billing = dash.get("/dashboard/billing").text
        assert 'id="state" class="state active"' in billing
        assert re.search(r'class="state paid">paid</td>', billing)

    def test_a_card_declined_on_charging_shows_the_decline(
        self, gateway: Gateway, localstripe: str
    ) -> None:
        """4000000000000341 is saved by Stripe but the retried charge fails: the page says so."""
        past_due(gateway, "acme", "30")
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        page = add_card(gateway, dash, localstripe, DECLINED_ON_CHARGE)
        assert "the charge of $30.00 failed (card declined)" in page
        assert flex_status(gateway.openai()) == 402

    def test_another_orgs_setup_intent_is_refused(self, gateway: Gateway, localstripe: str) -> None:
        """A SetupIntent made for acme cannot put a card on globex."""
        acme = sign_in(gateway.url, gateway.orgs["acme"].key)
        csrf = form_token(acme, "/dashboard/billing")
        secret = acme.post("/dashboard/billing/setup", headers={"x-csrf-token": csrf}).json()
        intent = confirm_setup(localstripe, secret["client_secret"], GOOD)
        globex = sign_in(gateway.url, gateway.orgs["globex"].key)
        answer = globex.post(
            "/dashboard/billing/card",
            data={"setup_intent": intent, "csrf_token": form_token(globex, "/dashboard/billing")},
        )
        assert "is not this organisation&#39;s" in answer.text
        assert "No card on file" in globex.get("/dashboard/billing").text


class TestInvoices:
    def test_an_invoice_downloads_as_csv(self, gateway: Gateway) -> None:
        """The CSV has the invoice's amount, state and reason, and its period's fees."""
        make_past_due(
            gateway.settings.database_url, gateway.settings.stripe_api_base, "acme", "23.4"
        )
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        [invoice] = re.findall(
            r'data-invoice="(inv_[0-9a-f]+)"', dash.get("/dashboard/billing").text
        )
        answer = dash.get(f"/dashboard/billing/invoices/{invoice}.csv")
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(answer.text)))
        assert rows[1][:6] == [
            invoice,
            rows[1][1],
            "23.400000000",
            "0.000000000",
            "failed",
            "no_card",
        ]
        assert rows[3][0] == "day"
        lines = [r for r in rows[4:] if r]
        assert sum(Decimal(r[7]) for r in lines) == Decimal("23.4")
        assert all(not r[1].startswith("=") for r in lines)  # no formula from a client's name

    def test_another_orgs_invoice_is_not_found(self, gateway: Gateway) -> None:
        """globex asking for acme's invoice gets a 404."""
        make_past_due(
            gateway.settings.database_url, gateway.settings.stripe_api_base, "acme", "23.4"
        )
        acme = sign_in(gateway.url, gateway.orgs["acme"].key)
        [invoice] = re.findall(
            r'data-invoice="(inv_[0-9a-f]+)"', acme.get("/dashboard/billing").text
        )
        globex = sign_in(gateway.url, gateway.orgs["globex"].key)
        assert globex.get(f"/dashboard/billing/invoices/{invoice}.csv").status_code == 404


class TestOperator:
    def test_the_operator_sees_every_org_and_marks_one_paid(self, gateway: Gateway) -> None:
        """The admin key opens the operator page; mark paid makes a past-due org active."""
        make_past_due(
            gateway.settings.database_url, gateway.settings.stripe_api_base, "acme", "23.4"
        )
        op = sign_in(gateway.url, ADMIN)
        page = op.get("/dashboard/operator").text
        assert 'data-org="acme"' in page
        assert 'data-org="globex"' in page
        assert op.get("/dashboard/").headers["location"] == "/dashboard/operator"
        answer = op.post(
            "/dashboard/operator/mark-paid",
            data={"org_id": "acme", "csrf_token": form_token(op, "/dashboard/operator")},
        )
        assert "acme marked paid: it is active" in answer.text
        assert flex_status(gateway.openai()) == 200

    def test_mark_paid_needs_the_csrf_token(self, gateway: Gateway) -> None:
        """Without the token the operator's POST is refused and the org stays past-due."""
        make_past_due(
            gateway.settings.database_url, gateway.settings.stripe_api_base, "acme", "23.4"
        )
        op = sign_in(gateway.url, ADMIN)
        answer = op.post("/dashboard/operator/mark-paid", data={"org_id": "acme"})
        assert answer.status_code == 403
        assert "past due" in op.get("/dashboard/operator").text

"""Billing: balances, charges and carry-over against a model; the 402 gate through the SDK."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import anyio
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flexroute.billing.gate import BillingGate
from flexroute.billing.processors import ChargeResult, ManualProcessor
from flexroute.billing.run import billing_run
from flexroute.billing.state import card_updated, mark_failed
from flexroute.engine import Call
from flexroute.errors import PaymentError
from flexroute.ledger import ACTIVE, PAST_DUE, Invoice, Org, open_store, period_of
from flexroute.money import from_pico
from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.conftest import Proxy, make_settings
from tests.test_ledger_sqlite import record

THRESHOLD = Decimal(20)
MONTHS = [dt.datetime(2026, m, 15, tzinfo=dt.UTC) for m in (1, 2, 3, 4)]
SPEC_MESSAGE = (
    "Billable flex requests are paused: the charge of $23.40 failed (card declined). Add or "
    "update a card on the Billing page, then retry. Default, priority and auto routing keep "
    "working."
)


class ScriptedProcessor:
    """Declines the orgs in ``failing``; counts every charge by idempotency key."""

    name = "scripted"

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.keys: list[str] = []
        self.took: dict[str, str] = {}  # invoice id -> the reference of the charge that paid it

    async def charge(
        self, org: Org, amount: Decimal, *, idempotency_key: str, invoice_id: str
    ) -> ChargeResult:
        self.keys.append(idempotency_key)
        if org.org_id in self.failing:
            return ChargeResult("failed", reason="card_declined")
        self.took[invoice_id] = f"pi_{len(self.keys)}"
        return ChargeResult("succeeded", reference=self.took[invoice_id])

    async def earlier_charge(self, org: Org, invoice: Invoice) -> ChargeResult | None:
        took = self.took.get(invoice.invoice_id)
        return None if took is None else ChargeResult("succeeded", reference=took)


@dataclasses.dataclass
class Model:
    """The simple truth: fees per org and month, invoices as [amount, paid]."""

    fees: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)  # org, month, pico
    charged: set[int] = dataclasses.field(default_factory=set)  # indexes into fees
    invoices: dict[tuple[str, int], list[Any]] = dataclasses.field(default_factory=dict)

    def run(self, month: int, failing: set[str]) -> None:
        for org in {o for o, _, _ in self.fees}:
            if (org, month) in self.invoices:
                continue
            due = [
                i
                for i, (o, m, _) in enumerate(self.fees)
                if o == org and m <= month and i not in self.charged
            ]
            amount = sum(self.fees[i][2] for i in due)
            if amount > 0 and amount >= THRESHOLD * 10**12:
                self.charged.update(due)
                self.invoices[(org, month)] = [amount, org not in failing]

    def retry(self, org: str, failing: set[str]) -> None:
        for (o, _), invoice in self.invoices.items():
            if o == org and not invoice[1] and org not in failing:
                invoice[1] = True

    def balance(self, org: str) -> int:
        fees = enumerate(self.fees)
        uncharged: int = sum(p for i, (o, _, p) in fees if o == org and i not in self.charged)
        invoices = self.invoices.items()
        unpaid: int = sum(a for (o, _), (a, paid) in invoices if o == org and not paid)
        return uncharged + unpaid

    def state(self, org: str) -> str:
        failed = any(not paid for (o, _), (_, paid) in self.invoices.items() if o == org)
        return PAST_DUE if failed else ACTIVE


ORGS = ("acme", "beta")
operation = st.one_of(
    st.tuples(st.just("fee"), st.sampled_from(ORGS), st.integers(1, 15 * 10**12)),
    st.tuples(st.just("run"), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.sampled_from(ORGS)),
    st.tuples(st.just("card"), st.sampled_from(ORGS)),
)


class TestBalancesProperty:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(operation, max_size=25))
    def test_balances_charges_and_carry_over_match_the_model(self, ops: list[Any]) -> None:
        """Any sequence of fees, runs, declines and card updates leaves the store's balances,
        states and invoices exactly where a simple in-memory model says."""
        model, processor = Model(), ScriptedProcessor()

        async def main(path: Path) -> None:
            store = open_store(f"sqlite:///{path}")
            month = 0  # fees arrive in the current month; runs may look back
            try:
                for n, op in enumerate(ops):
                    if op[0] == "fee":
                        at = MONTHS[month]
                        fee = record(f"r{n}", fee=str(from_pico(op[2])))
                        await store.record(dataclasses.replace(fee, org_id=op[1], received_at=at))
                        model.fees.append((op[1], month, op[2]))
                    elif op[0] == "run":
                        month = max(month, op[1])
                        await billing_run(store, processor, at=MONTHS[op[1]], threshold=THRESHOLD)
                        model.run(op[1], processor.failing)
                    elif op[0] == "fail":
                        processor.failing ^= {op[1]}
                    else:
                        await card_updated(store, processor, op[1], "cus_x")
                        model.retry(op[1], processor.failing)
                    for org in ORGS:
                        state = await store.org(org)
                        assert state.unpaid_balance == from_pico(model.balance(org)), (org, op)
                        assert state.state == model.state(org), (org, op)
                        amounts = sorted(i.amount for i in await store.invoices(org))
                        expected = sorted(
                            from_pico(a) for (o, _), (a, _) in model.invoices.items() if o == org
                        )
                        assert amounts == expected
                assert len(processor.keys) == len(set(processor.keys))  # no key charged twice
            finally:
                await store.aclose()

        with tempfile.TemporaryDirectory() as tmp:
            anyio.run(main, Path(tmp) / "ledger.sqlite3")


async def _past_due(url: str, org: str = "default") -> None:
    """Give ``org`` a failed $23.40 charge, as a billing run in another process would."""
    store = open_store(url)
    try:
        for i, amount in enumerate(("20", "3.4")):
            await store.record(dataclasses.replace(record(f"seed-{i}", fee=amount), org_id=org))
        period, end = period_of(dt.datetime.now(dt.UTC))
        invoice = await store.claim_invoice(org, period, end, THRESHOLD)
        assert invoice is not None
        await store.settle_invoice(invoice.invoice_id, "failed", "card_declined", None)
    finally:
        await store.aclose()


@pytest.fixture
def billing_proxy(tmp_path: Path, emulator: Any) -> Iterator[Proxy]:
    """The proxy with an uncached billing gate, so another process's changes show at once."""
    emulator.reset()
    settings = make_settings(tmp_path, emulator.base_url)
    with serve_in_thread(create_app(settings, gate_ttl=0)) as url:
        yield Proxy(url, settings)


def flex_chat(client: openai.OpenAI, model: str = "gpt-5-mini", **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-emulator": "flex_queue=0.05"},
        **kwargs,
    )


class TestPaymentRequired:
    def test_past_due_org_gets_402_through_the_openai_sdk(self, billing_proxy: Proxy) -> None:
        """A billable flex request of a past-due org raises APIStatusError 402 with the SPEC
        body; passthrough, priority and unpriced requests keep working."""
        anyio.run(_past_due, billing_proxy.settings.database_url)
        client = billing_proxy.client()
        with pytest.raises(openai.APIStatusError) as raised:
            flex_chat(client, extra_body={"start_within": "5s"})
        error = raised.value
        assert error.status_code == 402
        assert isinstance(error.body, dict)
        assert error.body["message"] == SPEC_MESSAGE
        assert error.body["type"] == error.body["code"] == "payment_required"
        assert error.body["reason"] == "card_declined"
        assert error.body["amount_due_usd"] == "23.400000000"
        assert flex_chat(client).choices[0].message.content
        assert flex_chat(client, service_tier="priority").service_tier == "priority"
        assert flex_chat(client, model="my-finetune-x", extra_body={"start_within": "5s"})

    def test_gemini_flex_gets_402_and_claude_keeps_working(self, billing_proxy: Proxy) -> None:
        """google-genai raises its ClientError with the 402 message; Claude is never billable."""
        from google import genai
        from google.genai import errors as genai_errors
        from google.genai import types

        anyio.run(_past_due, billing_proxy.settings.database_url)
        gemini = genai.Client(
            api_key="k",
            http_options=types.HttpOptions(base_url=billing_proxy.url, api_version="v1beta"),
        )
        config = types.GenerateContentConfig(
            http_options=types.HttpOptions(headers={"x-flex-start-within": "5s"})
        )
        with pytest.raises(genai_errors.ClientError) as raised:
            gemini.models.generate_content(model="gemini-2.5-flash", contents="hi", config=config)
        assert raised.value.code == 402
        assert "Billable flex requests are paused" in str(raised.value)
        claude = anthropic.Anthropic(api_key="k", base_url=billing_proxy.url, max_retries=0)
        message = claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"start_within": "5s"},
        )
        assert message.content

    def test_mark_paid_lifts_past_due_at_once(self, billing_proxy: Proxy) -> None:
        """`flexroute billing mark-paid` in another process lets the next flex request through."""
        url = billing_proxy.settings.database_url
        anyio.run(_past_due, url)
        client = billing_proxy.client()
        with pytest.raises(openai.APIStatusError):
            flex_chat(client, extra_body={"start_within": "5s"})
        done = subprocess.run(
            [sys.executable, "-m", "flexroute.cli", "billing", "mark-paid", "default"],
            env={"FLEXROUTE_DATABASE_URL": url, "PATH": "/usr/bin"},
            capture_output=True,
            check=True,
        )
        assert json.loads(done.stdout)["state"] == "active"
        assert flex_chat(client, extra_body={"start_within": "5s"}).service_tier == "flex"

    def test_no_card_message_names_the_fix(self) -> None:
        """Past-due for want of a card says a charge is due and no card is on file."""
        from flexroute.billing.gate import payment_required

        org = Org("o", PAST_DUE, "no_card", amount_due=Decimal("31.005"))
        error = payment_required(org)
        assert error.status == 402
        assert error.message.startswith(
            "Billable flex requests are paused: a charge of $31.01 is due and no card is on file."
        )


class TestGate:
    def test_a_successful_charge_in_this_process_lifts_past_due_at_once(
        self, tmp_path: Path
    ) -> None:
        """Even with a long cache, a card update whose retry succeeds clears the gate."""

        async def main() -> None:
            url = f"sqlite:///{tmp_path / 'l.sqlite3'}"
            await _past_due(url, "acme")
            store = open_store(url)
            gate = BillingGate(store, ttl=3600)
            call = Call("POST", "/v1/chat/completions", "", [], b"{}", org_id="acme")
            refusal = await gate(call)
            assert refusal is not None
            assert refusal.status == 402
            await card_updated(store, ScriptedProcessor(), "acme", "cus_1", gate.forget)
            assert await gate(call) is None
            await mark_failed(store, "acme", "insufficient_funds")
            gate.forget("acme")
            refusal = await gate(call)
            assert refusal is not None
            assert refusal.extra["reason"] == "insufficient_funds"
            await store.aclose()

        anyio.run(main)

    def test_a_burst_of_one_orgs_requests_shares_one_state_lookup(self, tmp_path: Path) -> None:
        """500 concurrent flex requests of one org read its state once, not 500 times."""

        async def main() -> None:
            store = open_store(f"sqlite:///{tmp_path / 'l.sqlite3'}")
            reads = 0
            real_state = store.org_state

            async def counted(org_id: str) -> str:
                nonlocal reads
                reads += 1
                return await real_state(org_id)

            store.org_state = counted  # type: ignore[method-assign]
            gate = BillingGate(store, ttl=60)
            call = Call("POST", "/v1/chat/completions", "", [], b"{}", org_id="acme")
            verdicts: list[object] = []

            async def one() -> None:
                verdicts.append(await gate(call))

            async with anyio.create_task_group() as group:
                for _ in range(500):
                    group.start_soon(one)
            assert verdicts == [None] * 500
            assert reads == 1
            await store.aclose()

        anyio.run(main)


class TestUsageViews:
    def test_usage_cli_and_endpoint_agree(self, billing_proxy: Proxy) -> None:
        """`flexroute usage --json` and GET /flexroute/v1/usage give the same totals."""
        client = billing_proxy.client()
        flex_chat(client, extra_body={"start_within": "5s"})
        flex_chat(client, service_tier="priority")
        served = billing_proxy.get("/flexroute/v1/usage")
        routes = sorted(row["route"] for row in served["data"])
        assert routes == ["flex", "passthrough"]
        assert sum(row["requests"] for row in served["data"]) == 2
        env = {"FLEXROUTE_DATABASE_URL": billing_proxy.settings.database_url, "PATH": "/usr/bin"}
        cli = [sys.executable, "-m", "flexroute.cli", "usage"]
        out = subprocess.run([*cli, "--json"], env=env, capture_output=True, check=True)
        assert json.loads(out.stdout) == served
        table = subprocess.run(cli, env=env, capture_output=True, check=True, text=True)
        assert table.stdout.splitlines()[0].split() == [
            "day",
            "model",
            "route",
            "requests",
            "spend_usd",
            "saving_usd",
            "fee_usd",
        ]
        filtered = billing_proxy.get("/flexroute/v1/usage?org=nobody")
        assert filtered == {"data": []}


class UnreachableFor(ScriptedProcessor):
    """The processor cannot be asked about the orgs in ``unreachable`` (outcome unknown)."""

    def __init__(self, unreachable: set[str]) -> None:
        super().__init__()
        self.unreachable = unreachable

    async def charge(
        self, org: Org, amount: Decimal, *, idempotency_key: str, invoice_id: str
    ) -> ChargeResult:
        if org.org_id in self.unreachable:
            raise PaymentError("the processor timed out")
        return await super().charge(
            org, amount, idempotency_key=idempotency_key, invoice_id=invoice_id
        )


class TestBillingRunIsolation:
    def test_one_orgs_payment_error_does_not_stop_the_others(self, tmp_path: Path) -> None:
        """Each org is charged; the one whose charge could not be asked is reported, its
        invoice left charging for the next run."""

        async def main() -> list[Any]:
            store = open_store(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
            try:
                for i, org in enumerate(("acme", "globex", "initech")):
                    seeded = dataclasses.replace(record(f"r{i}", fee="25"), org_id=org)
                    await store.record(seeded)
                processor = UnreachableFor({"globex"})
                outcomes = await billing_run(
                    store, processor, at=dt.datetime.now(dt.UTC), threshold=THRESHOLD
                )
                return [(o.org_id, o.invoice and o.invoice.status, o.error) for o in outcomes]
            finally:
                await store.aclose()

        outcomes = anyio.run(main)
        assert sorted(outcomes) == [
            ("acme", "paid", None),
            ("globex", "charging", "the processor timed out"),
            ("initech", "paid", None),
        ]


def age(ledger: Path, hours: float) -> None:
    """Make every invoice look last touched ``hours`` ago (a run that died that long ago)."""
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).isoformat()
    with sqlite3.connect(ledger) as conn:
        conn.execute("UPDATE invoices SET updated_at = ?", (when,))


class LostAnswer(ScriptedProcessor):
    """Takes the money on the first charge, then the answer is lost (outcome unknown)."""

    async def charge(
        self, org: Org, amount: Decimal, *, idempotency_key: str, invoice_id: str
    ) -> ChargeResult:
        await super().charge(org, amount, idempotency_key=idempotency_key, invoice_id=invoice_id)
        if len(self.keys) == 1:
            raise PaymentError("the connection to the processor broke off")
        return ChargeResult("succeeded", reference=self.took[invoice_id])


class TestAStaleInvoice:
    def test_whose_charge_answer_was_lost_is_settled_from_the_processor_not_charged_again(
        self, tmp_path: Path
    ) -> None:
        """A day later (the old key expired) the run asks the processor, finds the charge
        that took the money, and pays the invoice with it: one charge in all."""
        ledger = tmp_path / "ledger.sqlite3"

        async def main() -> None:
            store = open_store(f"sqlite:///{ledger}")
            processor = LostAnswer()
            try:
                await store.record(dataclasses.replace(record("r", fee="25"), org_id="acme"))
                at = dt.datetime.now(dt.UTC)
                [lost] = await billing_run(store, processor, at=at, threshold=THRESHOLD)
                assert lost.error is not None
                assert lost.invoice is not None
                assert lost.invoice.status == "charging"
                age(ledger, hours=25)
                [resumed] = await billing_run(store, processor, at=at, threshold=THRESHOLD)
                assert resumed.invoice is not None
                assert (resumed.invoice.status, resumed.invoice.attempts) == ("paid", 1)
                assert resumed.invoice.reference == "pi_1"
                assert len(processor.keys) == 1
            finally:
                await store.aclose()

        anyio.run(main)

    def test_with_the_manual_processor_is_opened_again_as_a_new_attempt(
        self, tmp_path: Path
    ) -> None:
        """The manual processor took no money: the stale invoice is a new attempt, ``open``
        for the operator under the new attempt's key."""
        ledger = tmp_path / "ledger.sqlite3"

        async def main() -> None:
            store = open_store(f"sqlite:///{ledger}")
            try:
                await store.record(dataclasses.replace(record("r", fee="25"), org_id="acme"))
                at = dt.datetime.now(dt.UTC)
                period, end = period_of(at)
                claimed = await store.claim_invoice("acme", period, end, THRESHOLD)
                assert claimed is not None  # ... and the run died before it was charged
                age(ledger, hours=25)
                [outcome] = await billing_run(store, ManualProcessor(), at=at, threshold=THRESHOLD)
                assert outcome.invoice is not None
                assert (outcome.invoice.status, outcome.invoice.attempts) == ("open", 2)
                assert outcome.invoice.reference == f"manual:flexroute-acme-{period}-2"
                assert await billing_run(store, ManualProcessor(), at=at, threshold=THRESHOLD) == []
            finally:
                await store.aclose()

        anyio.run(main)

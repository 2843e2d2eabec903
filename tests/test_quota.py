"""Free credit and spend caps (issue 15 items 1, 2, 4): the store's arithmetic on both
backends, and the 402s and headers through the real SDKs against a gateway."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import anthropic
import anyio
import openai
import pytest

from flexroute.billing.balance import BalanceLimit
from flexroute.billing.estimate import DEFAULT_OUTPUT_TOKENS, estimate, output_ceiling
from flexroute.billing.processors import ManualProcessor
from flexroute.billing.run import billing_run
from flexroute.catalog import default_catalog
from flexroute.cli import main
from flexroute.ledger import PAST_DUE, open_store, period_of
from flexroute.ledger.quota import Caps, Reservation, month_start, next_month
from flexroute.money import ZERO, format_usd, from_pico
from flexroute.usage import Tier
from tests.gateway_env import Gateway, gateway_settings, running_gateway
from tests.tcp_cutter import tcp_cutter
from tests.test_billing import ScriptedProcessor
from tests.test_ledger_sqlite import record

HI: list[Any] = [{"role": "user", "content": "hi"}]
NOW = dt.datetime.now(dt.UTC)
GPT = default_catalog().lookup("openai", "gpt-5-mini")


def run_store(url: str, work: Any) -> Any:
    async def main_() -> Any:
        store = open_store(url)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return anyio.run(main_)


def acme(request_id: str, fee: str = "0.2", **changes: Any) -> Any:
    return dataclasses.replace(record(request_id, fee=fee), org_id="acme", **changes)


def flex(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=HI, max_tokens=16, extra_body={"start_within": "5s"}, **extra
    )


def plain(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=HI, max_tokens=16
    )


def error_body(error: openai.APIStatusError) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.response.text)["error"]
    return body


class TestEstimate:
    def test_the_output_ceiling_comes_from_the_request(self) -> None:
        """max_tokens, max_output_tokens and Gemini's maxOutputTokens bound the output; without
        one the default is reserved."""
        assert output_ceiling({"max_tokens": 16}) == 16
        assert output_ceiling({"max_output_tokens": 40}) == 40
        assert output_ceiling({"generationConfig": {"maxOutputTokens": 7}}) == 7
        assert output_ceiling({"max_tokens": True}) == DEFAULT_OUTPUT_TOKENS
        assert output_ceiling({}) == DEFAULT_OUTPUT_TOKENS

    def test_the_estimate_bounds_cost_and_fee_of_what_the_emulator_serves(self) -> None:
        """Priced at standard, the estimate is at least the flex cost and the fee it yields."""
        assert GPT is not None
        body = {"model": "gpt-5-mini", "messages": HI, "max_tokens": 16}
        guess = estimate(
            body, len(json.dumps(body)), GPT, tier=None, billable=True, fee_rate=Decimal("0.2")
        )
        assert guess.cost == GPT.cost(Tier.STANDARD, guess.usage)
        assert ZERO < guess.fee < guess.cost
        unpriced = estimate(body, 50, None, tier=None, billable=True, fee_rate=Decimal("0.2"))
        assert unpriced.cost == unpriced.fee == ZERO


class TestStore:
    def test_credit_is_taken_from_fees_first_and_the_invoice_shows_it(self, store_url: str) -> None:
        """$0.50 credit against $0.80 of fees: $0.30 unpaid; the invoice charges $0.30 and shows
        $0.50 of credit used; next month's fees get no credit."""

        async def work(store: Any) -> None:
            assert await store.grant_credit("acme", Decimal("0.5"))
            assert not await store.grant_credit("acme", Decimal("7"))  # once per organisation
            for i in range(4):
                await store.record(acme(f"frq_c{i}"))
            org = await store.org("acme")
            assert org.credit_left == ZERO
            assert org.unpaid_balance == Decimal("0.3")
            assert org.out_of_credit
            period, end = period_of(record("x").received_at)
            invoice = await store.claim_invoice("acme", period, end, Decimal("0.1"))
            assert invoice is not None
            assert invoice.amount == Decimal("0.3")
            assert invoice.credit_used == Decimal("0.5")
            assert invoice.to_json()["credit_used_usd"] == format_usd(Decimal("0.5"))
            later = acme("frq_c9", received_at=end)
            await store.record(later)
            assert (await store.org("acme")).unpaid_balance == Decimal("0.5")

        run_store(store_url, work)

    def test_a_reservation_is_refused_past_a_cap_and_released_after(self, store_url: str) -> None:
        """Month spend + live reservations + the new one must fit the cap; releasing frees it;
        a key's cap counts only the key's requests."""
        since = month_start(NOW)

        def hold(cost: str, key: str | None = None) -> Reservation:
            # live for 5 minutes from now (NOW is the module's import time: minutes ago in a
            # full run, and an expired reservation no longer counts)
            expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
            return Reservation("acme", key, Decimal(cost), ZERO, expires)

        async def work(store: Any) -> None:
            await store.set_caps("acme", None, Caps(spend_cap=Decimal("1")))
            await store.set_caps("acme", "key_a", Caps(spend_cap=Decimal("0.4")))
            spent = acme("frq_s1", received_at=NOW, actual_cost=Decimal("0.5"), key_id="key_b")
            await store.record(spent)
            first = hold("0.3", "key_a")
            (done,) = await store.reserve([first], since)
            assert done.blocked is None
            assert done.caps == (Caps(spend_cap=Decimal("1")), Caps(spend_cap=Decimal("0.4")))
            assert done.totals[0].spend == Decimal("0.5")
            assert done.totals[1].spend == ZERO
            (done,) = await store.reserve([hold("0.15", "key_a")], since)
            assert done.blocked is not None
            assert (done.blocked.scope, done.blocked.kind) == ("key", "spend")
            assert done.blocked.total == Decimal("0.3")
            (done,) = await store.reserve([hold("0.3", "key_b")], since)
            assert done.blocked is not None
            assert (done.blocked.scope, done.blocked.total) == ("organization", Decimal("0.8"))
            await store.release([first.reservation_id])
            # a batch is checked in order, each against the ones admitted before it
            batch = await store.reserve([hold("0.3", "key_b"), hold("0.3", "key_b")], since)
            assert [b.blocked is None for b in batch] == [True, False]
            assert batch[1].totals[0].spend == Decimal("0.8")
            org, key = await store.month_totals("acme", "key_b", since)
            assert org.spend == key.spend == Decimal("0.5")

        run_store(store_url, work)


@pytest.fixture
def gateway(tmp_path: Path, emulator: Any) -> Any:
    emulator.reset()
    settings = gateway_settings(tmp_path, emulator.base_url, rate_limits={"free": 100_000})
    with running_gateway(settings, gate_ttl=0.05) as running:
        yield running


def set_caps(gw: Gateway, org: str, caps: Caps, key: str | None = None) -> None:
    async def work(store: Any) -> None:
        await store.set_caps(org, key, caps)

    run_store(gw.settings.database_url, work)


def month_spend(gw: Gateway, org: str) -> Decimal:
    async def work(store: Any) -> Decimal:
        totals = await store.month_totals(org, None, month_start(dt.datetime.now(dt.UTC)))
        return Decimal(totals[0].spend)

    result: Decimal = run_store(gw.settings.database_url, work)
    return result


class TestSpendCap:
    def test_requests_stop_at_the_cap_with_cap_spend_and_reset(self, gateway: Gateway) -> None:
        """Each answer shows the month's spend and the cap; the request that would pass the
        cap gets 402 spend_cap_reached; another organisation keeps working."""
        assert GPT is not None
        body = {"messages": HI, "model": "gpt-5-mini", "max_tokens": 16}
        one = estimate(body, len(json.dumps(body)), GPT, tier=None, billable=True,
                       fee_rate=Decimal("0.2")).cost  # fmt: skip
        cap = one * 3
        set_caps(gateway, "acme", Caps(spend_cap=cap))
        client = gateway.openai("acme")
        seen = []
        with pytest.raises(openai.APIStatusError) as stopped:  # noqa: PT012 -- the loop is the test
            for _ in range(50):
                raw = plain(client)
                seen.append(Decimal(raw.headers["x-flexroute-spend-month-usd"]))
                assert raw.headers["x-flexroute-spend-cap-usd"] == format_usd(cap)
        assert stopped.value.status_code == 402
        assert stopped.value.response.headers["x-should-retry"] == "false"
        error = error_body(stopped.value)
        spent = month_spend(gateway, "acme")
        assert error["code"] == "spend_cap_reached"
        assert error["type"] == "insufficient_quota"
        assert error["cap_usd"] == format_usd(cap)
        assert error["spend_usd"] == format_usd(spent)
        assert error["resets_at"] == next_month(dt.datetime.now(dt.UTC)).isoformat()
        assert "monthly cap on provider spend" in error["message"]
        assert seen == sorted(seen)
        assert seen[-1] == spent
        assert len(seen) >= 3
        assert spent <= cap
        other = plain(gateway.openai("globex"))
        assert "x-flexroute-spend-cap-usd" not in other.headers
        assert Decimal(other.headers["x-flexroute-spend-month-usd"]) > 0

    def test_a_key_cap_stops_only_that_key_and_claude_is_capped_too(self, gateway: Gateway) -> None:
        """Provider spend of any route counts: a capped key's Claude call gets the 402 in
        Anthropic's shape; the organisation's other keys go on."""
        set_caps(gateway, "acme", Caps(spend_cap=Decimal("0")), key=gateway.orgs["acme"].key_id)
        claude = anthropic.Anthropic(
            api_key=gateway.orgs["acme"].key, base_url=gateway.url, max_retries=0
        )
        with pytest.raises(anthropic.APIStatusError) as stopped:
            claude.messages.create(model="claude-sonnet-4-5", max_tokens=16, messages=HI)
        assert stopped.value.status_code == 402
        body = json.loads(stopped.value.response.text)
        assert body["type"] == "error"
        assert body["error"]["code"] == "spend_cap_reached"
        assert body["error"]["scope"] == "key"
        from tests.gateway_env import add_key

        _, second = add_key(gateway.settings, "acme")
        raw = plain(gateway.openai(key=second))
        assert raw.http_response.status_code == 200

    def test_a_fee_cap_stops_billable_flex_only(self, gateway: Gateway) -> None:
        """At the fee cap a flex request gets 402 (cap_type fee); standard requests, which
        carry no fee, keep working."""
        set_caps(gateway, "acme", Caps(fee_cap=Decimal("0.000000001")))
        client = gateway.openai("acme")
        with pytest.raises(openai.APIStatusError) as stopped:
            flex(client)
        error = error_body(stopped.value)
        assert (error["code"], error["cap_type"]) == ("spend_cap_reached", "fee")
        assert plain(client).http_response.status_code == 200

    def test_the_cli_sets_and_shows_caps(
        self, gateway: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: Any
    ) -> None:
        """`flexroute orgs caps ORG --spend-cap 12.5` sets it, `--fee-cap none` clears, a
        bad amount names the option and the fix; a running proxy applies it within its TTL."""
        monkeypatch.setenv("FLEXROUTE_DATABASE_URL", gateway.settings.database_url)
        assert main(["orgs", "caps", "acme", "--spend-cap", "12.5", "--fee-cap", "3"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["spend_cap_usd"] == format_usd(Decimal("12.5"))
        assert shown["fee_cap_usd"] == format_usd(Decimal(3))
        assert main(["orgs", "caps", "acme", "--fee-cap", "none"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["fee_cap_usd"] is None
        assert shown["spend_cap_usd"] == format_usd(Decimal("12.5"))
        assert main(["orgs", "caps", "acme", "--spend-cap", "lots"]) != 0
        assert "--spend-cap 'lots'" in capsys.readouterr().err
        assert main(["orgs", "caps", "acme", "--key", "key_nope", "--spend-cap", "1"]) != 0
        raw = plain(gateway.openai("acme"))
        anyio.run(anyio.sleep, 2.5)  # the proxy's cap view (2 s) may predate the change
        raw = plain(gateway.openai("acme"))
        assert raw.headers["x-flexroute-spend-cap-usd"] == format_usd(Decimal("12.5"))


class TestFreeCredit:
    def test_credit_used_up_without_a_card_is_402_insufficient_quota(
        self, tmp_path: Path, emulator: Any
    ) -> None:
        """Flex fees come out of the credit; when it is gone and no card is on file, billable
        flex gets flex.ai's 402 naming the amount and the fix, while standard requests keep
        working; a card on file lifts it."""
        emulator.reset()
        settings = gateway_settings(
            tmp_path, emulator.base_url, free_credit_usd=Decimal("0.000000001"),
            rate_limits={"free": 100_000},
        )  # fmt: skip
        with running_gateway(settings, gate_ttl=0.05) as gw:

            async def grant(store: Any) -> None:
                await store.grant_credit("acme", Decimal("0.000000001"))

            run_store(settings.database_url, grant)
            client = gw.openai("acme")
            assert flex(client).headers["x-flexroute-route"] == "flex"
            anyio.run(anyio.sleep, 0.1)
            with pytest.raises(openai.APIStatusError) as stopped:
                flex(client)
            assert stopped.value.status_code == 402
            error = error_body(stopped.value)
            assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
            assert error["credit_left_usd"] == format_usd(ZERO)
            assert Decimal(error["amount_due_usd"]) > 0
            assert "Add a card on the Billing page to continue" in error["message"]
            assert plain(client).http_response.status_code == 200
            assert flex(gw.openai("globex")).http_response.status_code == 200  # no credit: postpaid

            async def card(store: Any) -> None:
                await store.set_card("acme", "valid", "cus_test")

            run_store(settings.database_url, card)
            anyio.run(anyio.sleep, 0.1)
            assert flex(client).headers["x-flexroute-route"] == "flex"

            async def invoice(store: Any) -> Any:
                done = await billing_run(
                    store, ManualProcessor(), at=next_month(NOW), threshold=from_pico(1)
                )
                return next(o for o in done if o.org_id == "acme").invoice

            billed = run_store(settings.database_url, invoice)
            assert billed.credit_used == Decimal("0.000000001")
            assert billed.amount > 0


def spool_depth(url: str) -> int:
    with urlopen(f"{url}/flexroute/v1/health", timeout=10) as answer:  # noqa: S310 -- http://
        depth: int = json.loads(answer.read())["ledger"]["spool_depth"]
    return depth


class TestStoreDown:
    def test_a_capped_org_fails_open_on_its_own_view_while_postgresql_is_cut(
        self, tmp_path: Path, emulator: Any, pg_url: str
    ) -> None:
        """PostgreSQL blackholed: a capped organisation's requests are answered in bounded
        time, admitted against the replica's own month and in-flight estimates, so it still
        stops at the cap; an uncapped one is served throughout; every record lands once."""
        emulator.reset()
        assert GPT is not None
        body = {"messages": HI, "model": "gpt-5-mini", "max_tokens": 16}
        one = estimate(body, len(json.dumps(body)), GPT, tier=None, billable=False,
                       fee_rate=Decimal("0.2")).cost  # fmt: skip
        with tcp_cutter("127.0.0.1", 5432) as cutter:
            cut_url = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{cutter.port}")
            settings = gateway_settings(
                tmp_path, emulator.base_url, database_url=cut_url, ledger_write_timeout=1.0,
                spool_path=str(tmp_path / "spool.jsonl"), rate_limits={"free": 100_000},
            )  # fmt: skip
            # keys cached for the whole test: only the caps and the ledger see the cut
            with running_gateway(settings, key_ttl=600) as gw:
                set_caps(gw, "acme", Caps(spend_cap=one * 4))
                capped, free = gw.openai("acme"), gw.openai("globex")
                first = plain(capped)
                ids = [first.headers["x-flexroute-request-id"]]
                costs = [Decimal(first.headers["x-flexroute-cost-usd"])]
                ids.append(plain(free).headers["x-flexroute-request-id"])
                cutter.blackhole = True
                took = []
                with pytest.raises(openai.APIStatusError) as stopped:  # noqa: PT012 -- a loop
                    for _ in range(20):
                        began = time.monotonic()
                        try:
                            raw = plain(capped)
                        finally:
                            took.append(time.monotonic() - began)
                        ids.append(raw.headers["x-flexroute-request-id"])
                        costs.append(Decimal(raw.headers["x-flexroute-cost-usd"]))
                assert error_body(stopped.value)["code"] == "spend_cap_reached"
                assert len(costs) > 1  # answered during the cut
                assert sum(costs) <= one * 4  # ...and stopped at the cap on the local view
                assert sum(costs) + one > one * 4  # only because the next estimate did not fit
                for _ in range(3):
                    began = time.monotonic()
                    ids.append(plain(free).headers["x-flexroute-request-id"])
                    took.append(time.monotonic() - began)
                assert max(took) < 8, took  # each wait on the store is bounded (1 s here)
                cutter.blackhole = False
                cutter.cut()  # the pool's connections were left mid-query: reset them
                deadline = time.monotonic() + 30
                while spool_depth(gw.url):
                    assert time.monotonic() < deadline, "the spool was never replayed"
                    ids.append(plain(free).headers["x-flexroute-request-id"])
                    time.sleep(0.3)

        async def count(store: Any) -> set[int]:
            return {int(await store.get(i) is not None) for i in ids}

        assert run_store(pg_url, count) == {1}


class TestBalanceLimit:
    def test_over_the_limit_an_early_invoice_is_charged_once(self, store_url: str) -> None:
        """Fees not yet invoiced above the limit: one early invoice (period YYYY-MM+1) is
        charged at once; a declined charge makes the org past-due; nothing new, nothing more."""
        processor = ScriptedProcessor()
        processor.failing.add("acme")

        async def work(store: Any) -> None:
            limit = BalanceLimit(store, processor, Decimal("0.5"))
            await store.record(acme("frq_b1", fee="0.3"))
            assert await limit.check("acme") is None  # under the limit
            await store.record(acme("frq_b2", fee="0.3"))
            at = dt.datetime.now(dt.UTC)
            invoice = await limit.check("acme", at)
            assert invoice is not None
            assert invoice.period == f"{period_of(at)[0]}+1"
            assert (invoice.amount, invoice.status) == (Decimal("0.6"), "failed")
            assert (await store.org("acme")).state == PAST_DUE
            assert await limit.check("acme") is None  # already invoiced: no second charge
            assert len(processor.keys) == 1

        run_store(store_url, work)

    def test_the_proxy_charges_as_soon_as_fees_pass_the_limit(
        self, tmp_path: Path, emulator: Any
    ) -> None:
        """Through the gateway: a flex fee above FLEXROUTE_BALANCE_LIMIT_USD is invoiced
        within a second or two, without waiting for the billing run."""
        emulator.reset()
        settings = gateway_settings(
            tmp_path, emulator.base_url, balance_limit_usd=Decimal("0.000000001"),
            rate_limits={"free": 100_000},
        )  # fmt: skip
        with running_gateway(settings) as gw:
            raw = flex(gw.openai("acme"))
            fee = Decimal(raw.headers["x-flexroute-fee-usd"])
            assert fee > 0

            async def invoices(store: Any) -> list[Any]:
                found: list[Any] = await store.invoices("acme")
                return found

            deadline = time.monotonic() + 15
            # the invoice is written `charging`, then charged: wait for the charge's outcome
            while not (found := run_store(settings.database_url, invoices)) or any(
                invoice.status == "charging" for invoice in found
            ):
                assert time.monotonic() < deadline, f"no early invoice charged: {found}"
                time.sleep(0.2)
        assert len(found) == 1
        assert found[0].amount == fee
        assert found[0].status == "open"  # the manual processor: sent for payment
        assert "+" in found[0].period

"""Dashboard test helpers: sign in over plain HTTP (httpx), read a page's CSRF token, send a
flex request, make an organisation past-due."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from decimal import Decimal

import anyio
import httpx
import openai

from flexroute.billing.run import billing_run
from flexroute.billing.stripe_processor import StripeProcessor
from flexroute.ledger import PAST_DUE, open_store
from tests.test_ledger_sqlite import record

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def token(html: str) -> str:
    found = TOKEN.search(html)
    assert found is not None, "the page has no CSRF token"
    return found.group(1)


def sign_in(base_url: str, key: str) -> httpx.Client:
    """A client holding a fresh dashboard session for ``key``."""
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=30)
    page = client.get("/dashboard/signin")
    answer = client.post("/dashboard/signin", data={"key": key, "csrf_token": token(page.text)})
    assert answer.status_code == 303, answer.text
    return client


def form_token(client: httpx.Client, path: str) -> str:
    return token(client.get(path).text)


def flex(client: openai.OpenAI) -> openai.types.chat.ChatCompletion:
    """One billable flex request."""
    return client.chat.completions.create(
        model="gpt-5-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"start_within": "5s"},
    )


def flex_status(client: openai.OpenAI) -> int:
    """The HTTP status of one billable flex request."""
    try:
        flex(client)
    except openai.APIStatusError as error:
        return error.status_code
    return 200


def make_past_due(database_url: str, stripe_base: str | None, org: str, amount: str) -> None:
    """``org`` owes ``amount`` in fees (one record whose model name is a spreadsheet formula,
    as a client may send), charged by this month's run with no card on file: past-due."""

    async def main() -> None:
        store = open_store(database_url)
        try:
            now = dt.datetime.now(dt.UTC)
            owed = dataclasses.replace(
                record(f"{org}-owed-{now.timestamp()}", fee=amount),
                org_id=org,
                model='=HYPERLINK("http://evil")',
                received_at=now - dt.timedelta(seconds=1),
            )
            await store.record(owed)
            processor = StripeProcessor("sk_test_dashboard", api_base=stripe_base)
            await billing_run(store, processor, at=now, threshold=Decimal(20))
            assert (await store.org(org)).state == PAST_DUE
        finally:
            await store.aclose()

    anyio.run(main)

"""The dashboard in a real browser: Playwright driving Debian's Chromium against a real
``flexroute serve`` (gateway mode, its own process), the emulator and localstripe, whose fake
Stripe.js (``/js.stripe.com/v3/``) stands in for Stripe's.

Sign in, see the chart after traffic, add a card that clears past-due (the flex request that
got 402 is served again), a card declined on charging shows the decline, a revoked key's next
request gets 401, and one organisation never sees another's data. The pages must raise no
Content-Security-Policy violation, and no key may reach a page or the server's log.

``DASHBOARD_SCREENSHOTS=docs/screenshots pytest tests/test_dashboard_browser.py`` also saves
a screenshot of each page there (the README shows them).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import openai
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from benchmarks._procs import free_port, stopping, wait_ready
from flexroute.ledger import open_store
from tests.dashboard_env import flex_status, make_past_due
from tests.gateway_env import SECRET, Org, seed

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = "admin-browser-key-0123456789"
STRIPE_KEY = "sk_test_dashboard"
GOOD, DECLINED_ON_CHARGE = "4242424242424242", "4000000000000341"
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")
HI: Any = {"role": "user", "content": "hi"}
_T = TypeVar("_T")


@dataclass
class Stand:
    url: str
    database_url: str
    stripe_base: str
    orgs: dict[str, Org]
    log: Path

    def client(self, org: str | None = None, key: str | None = None) -> openai.OpenAI:
        api_key = key or self.orgs[org or "acme"].key
        return openai.OpenAI(api_key=api_key, base_url=f"{self.url}/v1", max_retries=0)

    def flex(self, org: str | None = None, key: str | None = None) -> int:
        """One flex request's HTTP status."""
        return flex_status(self.client(org, key))

    def past_due(self, org: str, amount: str) -> None:
        off_loop(make_past_due, self.database_url, self.stripe_base, org, amount)
        time.sleep(0.2)  # the server's gate trusts a cached state for 50 ms


@pytest.fixture(scope="module")
def stand(
    tmp_path_factory: pytest.TempPathFactory, emulator: Any, localstripe: str
) -> Iterator[Stand]:
    """``flexroute serve`` in gateway mode with three organisations, its log in a file."""
    from tests.gateway_env import gateway_settings

    tmp = tmp_path_factory.mktemp("browser")
    settings = gateway_settings(tmp, emulator.base_url)
    orgs = off_loop(seed, settings, ("acme", "globex", "initech"))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEXROUTE_")},
        "FLEXROUTE_DATABASE_URL": settings.database_url,
        "FLEXROUTE_OPENAI_BASE_URL": f"{emulator.base_url}/v1",
        "FLEXROUTE_GEMINI_BASE_URL": emulator.base_url,
        "FLEXROUTE_ANTHROPIC_BASE_URL": emulator.base_url,
        "FLEXROUTE_SECRET_KEY": SECRET,
        "FLEXROUTE_ADMIN_KEY": ADMIN,
        "FLEXROUTE_RATE_LIMITS": '{"free": 1000}',
        "FLEXROUTE_PAYMENT_PROCESSOR": "stripe",
        "FLEXROUTE_STRIPE_API_KEY": STRIPE_KEY,
        "FLEXROUTE_STRIPE_API_BASE": localstripe,
        "FLEXROUTE_STRIPE_PUBLISHABLE_KEY": "pk_test_browser",
        "FLEXROUTE_STRIPE_JS_URL": f"{localstripe}/js.stripe.com/v3/",
    }
    log = tmp / "serve.log"
    args = ["serve", "--port", str(port), "--workers", "1", "--log-level", "debug"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flexroute.cli", *args], env=env, stdout=out, stderr=out
        )
        with stopping(proc):
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(f"{url}/flexroute/v1/health")
            except OSError:
                pytest.fail(f"flexroute serve did not start: {log.read_text()[-2000:]}")
            yield Stand(url, settings.database_url, localstripe, orgs, log)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"The browser tests need Debian's Chromium at {CHROMIUM}: "
            "run `apt-get install -y chromium` (as .ci/run does)."
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (no cookies); any CSP violation or page error fails the test."""
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    opened = context.new_page()
    problems: list[str] = []
    # a page answered 404 or 401 on purpose logs "Failed to load resource": not a problem
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error"
              and not m.text.startswith("Failed to load resource") else None)  # fmt: skip
    opened.on("pageerror", lambda e: problems.append(str(e)))
    yield opened
    context.close()
    assert problems == []


def sign_in(page: Page, stand: Stand, key: str) -> None:
    page.goto(f"{stand.url}/dashboard/signin")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def shot(page: Page, name: str) -> None:
    """With DASHBOARD_SCREENSHOTS set: the whole page as a small PNG (64 colours, ~20 KB)."""
    if not SHOTS:
        return
    from PIL import Image  # matplotlib's dependency, in the test extra

    path = Path(SHOTS) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    with Image.open(path) as taken:
        small = taken.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def add_card(page: Page, number: str) -> None:
    """Type a card into localstripe's Element and submit the form."""
    page.wait_for_selector("#card-element input[placeholder=number]")
    for field, value in (("number", number), ("exp_month", "12"), ("exp_year", "34"),
                         ("cvc", "123"), ("postal_code", "10001")):  # fmt: skip
        page.fill(f"#card-element input[placeholder={field}]", value)
    page.click("#card-submit")
    page.wait_for_selector(".notice, #page-error, #card-error:not([hidden])")


class TestBrowser:
    def test_sign_in_and_see_the_chart_after_traffic(self, page: Page, stand: Stand) -> None:
        """After three flex requests the Overview's chart has a flex bar for today."""
        page.goto(f"{stand.url}/dashboard/")
        assert page.url.endswith("/dashboard/signin")
        shot(page, "signin")
        for _ in range(3):
            assert stand.flex("acme") == 200
        client = stand.client("acme")
        for _ in range(2):  # passthrough: no start_within
            client.chat.completions.create(model="gpt-5-mini", messages=[HI])
        client.chat.completions.create(  # fallback: flex refused until the deadline
            model="gpt-5-mini",
            messages=[HI],
            extra_body={"start_within": "300ms"},
            extra_headers={"x-emulator": "flex_refuse=always;retry_after=1"},
        )
        sign_in(page, stand, stand.orgs["acme"].key)
        assert page.url.endswith("/dashboard/")
        today = dt.datetime.now(dt.UTC).date().isoformat()
        bar = page.locator(f'#chart-requests rect.bar.flex[data-day="{today}"]')
        assert bar.count() == 1
        passthrough = page.locator(f'#chart-requests rect.bar.passthrough[data-day="{today}"]')
        assert passthrough.count() == 1
        assert int(page.inner_text("#requests")) >= 6
        assert page.locator("#chart-usd polyline.saving").count() == 1
        shot(page, "overview")
        page.click("text=Requests")
        assert page.locator("#requests tr[data-request]").count() >= 3
        shot(page, "requests")
        page.locator("#requests tr[data-request] a").first.click()
        assert page.inner_text("#record").count("gpt-5-mini") == 1
        shot(page, "request")

    def test_a_good_card_clears_past_due_so_flex_works_again(
        self, page: Page, stand: Stand
    ) -> None:
        """Past-due flex gets 402; a 4242… card saved in the page makes the next one 200."""
        stand.past_due("acme", "23.4")
        assert stand.flex("acme") == 402
        sign_in(page, stand, stand.orgs["acme"].key)
        page.goto(f"{stand.url}/dashboard/billing")
        assert "$23.40" in page.inner_text("#past-due")
        add_card(page, GOOD)
        assert "Card saved" in page.inner_text(".notice")
        assert stand.flex("acme") == 200
        assert page.inner_text("#state") == "active"
        assert page.inner_text("#card-on-file") == "visa •••• 4242, 12/2034"
        shot(page, "billing")

    def test_a_card_declined_on_charging_shows_the_decline(self, page: Page, stand: Stand) -> None:
        """4000000000000341 is accepted by Stripe but its charge fails: the page says so."""
        stand.past_due("initech", "30")
        sign_in(page, stand, stand.orgs["initech"].key)
        page.goto(f"{stand.url}/dashboard/billing")
        add_card(page, DECLINED_ON_CHARGE)
        assert "failed (card declined)" in page.inner_text("#page-error")
        assert "card declined" in page.inner_text("#invoices")
        assert stand.flex("initech") == 402

    def test_a_revoked_key_gets_401_on_its_next_request(self, page: Page, stand: Stand) -> None:
        """A key created in the page works; revoked in the page, its next request is a 401."""
        sign_in(page, stand, stand.orgs["globex"].key)
        page.goto(f"{stand.url}/dashboard/keys")
        page.click("#create-key")
        new_key = page.inner_text("#new-key")
        assert new_key.startswith("fr_")
        assert stand.flex(key=new_key) == 200
        page.goto(f"{stand.url}/dashboard/keys")  # the key is shown once: not any more
        assert new_key not in page.content()
        key_id = page.locator("#keys tr[data-key]").last.get_attribute("data-key")
        page.locator(f'#keys tr[data-key="{key_id}"] button.danger').click()
        page.wait_for_selector(".notice")
        assert stand.flex(key=new_key) == 401
        assert stand.flex("globex") == 200
        shot(page, "keys")

    def test_one_org_never_sees_anothers_data(self, page: Page, stand: Stand) -> None:
        """globex's pages show none of acme's requests, and acme's request id is a 404."""
        assert stand.flex("acme") == 200
        acme_ids = [r.request_id for r in _recent(stand, "acme")]
        sign_in(page, stand, stand.orgs["globex"].key)
        page.goto(f"{stand.url}/dashboard/requests")
        html = page.content()
        assert all(request_id not in html for request_id in acme_ids)
        answer = page.goto(f"{stand.url}/dashboard/requests/{acme_ids[0]}")
        assert answer is not None
        assert answer.status == 404
        page.goto(f"{stand.url}/dashboard/")
        assert page.inner_text("#who") == "globex"
        assert "acme" not in page.content()

    def test_the_operator_sees_every_org(self, page: Page, stand: Stand) -> None:
        """The admin key opens the operator page listing all three organisations."""
        sign_in(page, stand, ADMIN)
        assert page.url.endswith("/dashboard/operator")
        for org in ("acme", "globex", "initech"):
            assert page.locator(f'#orgs tr[data-org="{org}"]').count() == 1
        shot(page, "operator")

    def test_no_key_reaches_a_page_or_the_log(self, page: Page, stand: Stand) -> None:
        """After the whole tour, no organisation's key and not the admin key is in the log."""
        sign_in(page, stand, stand.orgs["acme"].key)
        for path in ("/", "/billing", "/keys", "/requests"):
            page.goto(f"{stand.url}/dashboard{path}")
            assert stand.orgs["acme"].key not in page.content()
        cookies = page.context.cookies()
        assert all(stand.orgs["acme"].key not in c["value"] for c in cookies)
        assert (
            page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage)") == "{}{}"
        )
        log = stand.log.read_text()
        assert "dashboard sign-in: acme" in log  # the server did log the sign-ins
        for secret in [*(o.key for o in stand.orgs.values()), ADMIN]:
            assert secret not in log


def _recent(stand: Stand, org: str) -> list[Any]:
    async def main() -> list[Any]:
        store = open_store(stand.database_url)
        try:
            return await store.recent(org, 10)
        finally:
            await store.aclose()

    return off_loop(anyio.run, main)


def off_loop(fn: Callable[..., _T], *args: Any) -> _T:
    """Run ``fn`` on another thread: Playwright's sync API keeps an event loop on this one,
    and ``anyio.run`` refuses to start a second."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()

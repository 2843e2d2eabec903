"""The dashboard over HTTP (httpx, no browser) against a real gateway-mode proxy and the
emulator: sessions, CSRF, security headers, escaping of client-supplied names, isolation
between organisations, and keys never shown or logged."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from flexroute.dashboard.signin import Throttle
from flexroute.proxy import ProxyApp, create_app
from flexroute.testing import serve_in_thread
from tests.dashboard_env import form_token, sign_in, token
from tests.gateway_env import Gateway, gateway_settings, running_gateway, seed

PAGES = ("/dashboard/", "/dashboard/billing", "/dashboard/keys", "/dashboard/requests")
ADMIN = "admin-test-key-0123456789"


@pytest.fixture
def served(tmp_path: Path, emulator: Any) -> Iterator[tuple[Gateway, ProxyApp]]:
    """Two organisations, acme and globex, on a gateway-mode proxy (and the app itself)."""
    emulator.reset()
    settings = gateway_settings(tmp_path, emulator.base_url, admin_key=ADMIN)
    orgs = seed(settings, ("acme", "globex"))
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield Gateway(url, settings, orgs), app


@pytest.fixture
def gateway(served: tuple[Gateway, ProxyApp]) -> Gateway:
    return served[0]


def flex_call(gateway: Gateway, org: str = "acme", model: str = "gpt-5-mini") -> str:
    reply = gateway.openai(org).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], extra_body={"start_within": "5s"}
    )
    return str(reply.headers["x-flexroute-request-id"])


class TestSignIn:
    def test_sign_in_gives_an_httponly_strict_session_cookie(self, gateway: Gateway) -> None:
        """A valid key is exchanged for an HttpOnly, SameSite=Strict cookie scoped to /dashboard."""
        client = httpx.Client(base_url=gateway.url)
        page = client.get("/dashboard/signin")
        answer = client.post(
            "/dashboard/signin",
            data={"key": gateway.orgs["acme"].key, "csrf_token": token(page.text)},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/"
        cookie = next(v for k, v in answer.headers.multi_items()
                      if k == "set-cookie" and v.startswith("flexroute_session="))  # fmt: skip
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/dashboard" in cookie
        assert "Secure" not in cookie  # plain http on loopback
        assert client.get("/dashboard/").status_code == 200

    def test_cookie_is_secure_behind_tls(self, gateway: Gateway) -> None:
        """Behind a TLS-terminating proxy (x-forwarded-proto: https) the cookie is Secure."""
        client = httpx.Client(base_url=gateway.url, headers={"x-forwarded-proto": "https"})
        page = client.get("/dashboard/signin")
        assert "Secure" in page.headers["set-cookie"]
        answer = client.post(
            "/dashboard/signin",
            data={"key": gateway.orgs["acme"].key, "csrf_token": token(page.text)},
            headers={"cookie": f"flexroute_signin={token(page.text)}"},
        )
        session = next(v for k, v in answer.headers.multi_items() if k == "set-cookie")
        assert session.startswith("flexroute_session=")
        assert "Secure" in session

    def test_unknown_key_is_refused(self, gateway: Gateway) -> None:
        """A wrong key gets the sign-in page again with a 401 and no session."""
        client = httpx.Client(base_url=gateway.url)
        page = client.get("/dashboard/signin")
        answer = client.post(
            "/dashboard/signin", data={"key": "fr_nope", "csrf_token": token(page.text)}
        )
        assert answer.status_code == 401
        assert "flexroute_session" not in client.cookies
        assert client.get("/dashboard/").status_code == 303

    def test_pages_need_a_session(self, gateway: Gateway) -> None:
        """Without a session every page redirects to the sign-in page."""
        for path in PAGES:
            answer = httpx.get(f"{gateway.url}{path}")
            assert answer.status_code == 303
            assert answer.headers["location"] == "/dashboard/signin"

    def test_sign_out_ends_the_session(self, gateway: Gateway) -> None:
        """After signing out the old session cookie opens nothing."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        old = client.cookies["flexroute_session"]
        answer = client.post(
            "/dashboard/signout", data={"csrf_token": form_token(client, "/dashboard/")}
        )
        assert answer.status_code == 303
        again = httpx.get(f"{gateway.url}/dashboard/", cookies={"flexroute_session": old})
        assert again.status_code == 303

    def test_session_expires(self, tmp_path: Path, emulator: Any) -> None:
        """A session older than FLEXROUTE_DASHBOARD_SESSION_TTL opens nothing."""
        settings = gateway_settings(tmp_path, emulator.base_url, dashboard_session_ttl=1.0)
        with running_gateway(settings) as gateway:
            client = sign_in(gateway.url, gateway.orgs["acme"].key)
            cookie = client.cookies["flexroute_session"]
            assert client.get("/dashboard/").status_code == 200
            time.sleep(1.3)
            late = httpx.get(f"{gateway.url}/dashboard/", cookies={"flexroute_session": cookie})
            assert late.status_code == 303

    def test_revoking_the_sign_in_key_ends_the_session(self, gateway: Gateway) -> None:
        """A session lives only as long as the key it signed in with."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        answer = client.post(
            "/dashboard/keys/revoke",
            data={"key_id": gateway.orgs["acme"].key_id,
                  "csrf_token": form_token(client, "/dashboard/keys")},
        )  # fmt: skip
        assert answer.status_code == 200
        assert client.get("/dashboard/").status_code == 303

    def test_signing_in_again_replaces_the_session(self, gateway: Gateway) -> None:
        """A second sign-in from the same browser ends the first session."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        first = client.cookies["flexroute_session"]
        page = client.get("/dashboard/signin")
        client.post(
            "/dashboard/signin",
            data={"key": gateway.orgs["globex"].key, "csrf_token": token(page.text)},
        )
        assert client.cookies["flexroute_session"] != first
        old = httpx.get(
            f"{gateway.url}/dashboard/", headers={"cookie": f"flexroute_session={first}"}
        )
        assert old.status_code == 303

    def test_changing_the_admin_key_ends_operator_sessions(
        self, served: tuple[Gateway, ProxyApp]
    ) -> None:
        """An operator session from before FLEXROUTE_ADMIN_KEY changed opens nothing after."""
        gateway = served[0]
        cookie = sign_in(gateway.url, ADMIN).cookies["flexroute_session"]
        rotated = gateway.settings.model_copy(update={"admin_key": SecretStr("new-admin-key-42")})
        with serve_in_thread(create_app(rotated)) as url:
            answer = httpx.get(
                f"{url}/dashboard/operator", headers={"cookie": f"flexroute_session={cookie}"}
            )
        assert answer.status_code == 303


class TestSessionFixation:
    def test_a_planted_session_id_is_never_promoted(self, gateway: Gateway) -> None:
        """A session id set before sign-in is replaced by a new one, and stays worthless."""
        planted = "attacker-chosen-session-id"
        page = httpx.get(f"{gateway.url}/dashboard/signin")
        csrf = token(page.text)
        answer = httpx.post(
            f"{gateway.url}/dashboard/signin",
            data={"key": gateway.orgs["acme"].key, "csrf_token": csrf},
            headers={"cookie": f"flexroute_session={planted}; flexroute_signin={csrf}"},
        )
        assert answer.status_code == 303
        issued = answer.cookies["flexroute_session"]
        assert issued != planted
        cookie = {"cookie": f"flexroute_session={issued}"}
        assert httpx.get(f"{gateway.url}/dashboard/", headers=cookie).status_code == 200
        victim = {"cookie": f"flexroute_session={planted}"}
        assert httpx.get(f"{gateway.url}/dashboard/", headers=victim).status_code == 303

    def test_each_sign_in_gets_a_new_session(self, gateway: Gateway) -> None:
        """Two sign-ins with the same key get two different session ids."""
        first = sign_in(gateway.url, gateway.orgs["acme"].key).cookies["flexroute_session"]
        second = sign_in(gateway.url, gateway.orgs["acme"].key).cookies["flexroute_session"]
        assert first != second


class TestCsrf:
    def test_post_without_token_is_refused_and_changes_nothing(self, gateway: Gateway) -> None:
        """Creating a key without the CSRF token gets 403 and creates no key."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        before = client.get("/dashboard/keys").text.count("data-key=")
        answer = client.post("/dashboard/keys/create", data={})
        assert answer.status_code == 403
        assert "CSRF" in answer.text
        assert client.get("/dashboard/keys").text.count("data-key=") == before

    def test_token_of_another_session_is_refused(self, gateway: Gateway) -> None:
        """A token is bound to its session: another session's token does not pass."""
        mine = sign_in(gateway.url, gateway.orgs["acme"].key)
        theirs = sign_in(gateway.url, gateway.orgs["globex"].key)
        foreign = form_token(theirs, "/dashboard/keys")
        answer = mine.post(
            "/dashboard/keys/revoke",
            data={"key_id": gateway.orgs["acme"].key_id, "csrf_token": foreign},
        )
        assert answer.status_code == 403
        assert mine.get("/dashboard/").status_code == 200  # the key was not revoked

    def test_sign_in_needs_the_double_submit_token(self, gateway: Gateway) -> None:
        """A sign-in POST without the matching cookie (login CSRF) is refused."""
        page = httpx.get(f"{gateway.url}/dashboard/signin")
        answer = httpx.post(
            f"{gateway.url}/dashboard/signin",
            data={"key": gateway.orgs["acme"].key, "csrf_token": token(page.text)},
        )
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers

    def test_every_form_carries_the_token(self, gateway: Gateway) -> None:
        """Each POST form of every page (the operator's too) has the session's CSRF token."""
        forms: list[str] = []
        for key, paths in ((gateway.orgs["acme"].key, PAGES), (ADMIN, ("/dashboard/operator",))):
            client = sign_in(gateway.url, key)
            expected = form_token(client, paths[0])
            for path in paths:
                html = client.get(path).text
                found = re.findall(r'<form[^>]*method="post"[^>]*>(.*?)</form>', html, re.S)
                forms += found
                assert all(f'name="csrf_token" value="{expected}"' in form for form in found)
        assert len(forms) >= 5  # sign-out on each page, create, revoke, caps

    def test_json_call_needs_the_header_token(self, gateway: Gateway) -> None:
        """The card form's JSON call without x-csrf-token gets 403."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        assert client.post("/dashboard/billing/setup").status_code == 403


class TestSecurityHeaders:
    def test_every_page_forbids_framing_sniffing_and_inline_script(self, gateway: Gateway) -> None:
        """Pages, errors and static files carry CSP (no inline script), DENY, nosniff."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        paths = [*PAGES, "/dashboard/signin", "/dashboard/nope", "/dashboard/static/dashboard.js"]
        for path in paths:
            headers = client.get(path).headers
            csp = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp
            assert "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
            assert "unsafe-eval" not in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            assert headers["cache-control"] == "no-store"

    def test_pages_have_no_inline_script(self, gateway: Gateway) -> None:
        """Every script tag has a src: the CSP could not allow anything else."""
        client = sign_in(gateway.url, gateway.orgs["acme"].key)
        for path in PAGES:
            html = client.get(path).text
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
            assert not re.search(r"<[^>]+\son[a-z]+=", html)  # no inline event handlers


class TestEscaping:
    def test_a_hostile_model_name_is_escaped(self, gateway: Gateway) -> None:
        """A model name sent by a client shows as text on Overview and Requests, never as markup."""
        hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
        flex_call(gateway, "acme", model=hostile)  # the emulator answers any model
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        for path in ("/dashboard/", "/dashboard/requests"):
            html = dash.get(path).text
            assert hostile not in html
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        request_id = re.findall(r'data-request="([^"]+)"', dash.get("/dashboard/requests").text)
        detail = dash.get(f"/dashboard/requests/{request_id[0]}").text
        assert hostile not in detail
        assert "&lt;img src=x" in detail

    def test_a_hostile_org_name_is_escaped(self, tmp_path: Path, emulator: Any) -> None:
        """An organisation named with markup is shown escaped in the header and headings."""
        settings = gateway_settings(tmp_path, emulator.base_url, admin_key=ADMIN)
        name = "<b onmouseover=alert(1)>evil</b>"
        orgs = seed(settings, (name,))
        with serve_in_thread(create_app(settings)) as url:
            dash = sign_in(url, orgs[name].key)
            html = dash.get("/dashboard/").text
            assert name not in html
            assert "&lt;b onmouseover=alert(1)&gt;evil&lt;/b&gt;" in html
            operator = sign_in(url, ADMIN).get("/dashboard/operator").text
            assert name not in operator
            assert "&lt;b onmouseover" in operator


class TestIsolation:
    def test_an_org_never_sees_another_orgs_requests(self, gateway: Gateway) -> None:
        """globex's session lists none of acme's requests and cannot open one by id."""
        theirs = flex_call(gateway, "acme")
        mine = flex_call(gateway, "globex")
        dash = sign_in(gateway.url, gateway.orgs["globex"].key)
        listing = dash.get("/dashboard/requests").text
        assert mine in listing
        assert theirs not in listing
        assert dash.get(f"/dashboard/requests/{theirs}").status_code == 404
        keys = dash.get("/dashboard/keys").text
        assert gateway.orgs["acme"].key_id not in keys

    def test_an_org_cannot_revoke_another_orgs_key(self, gateway: Gateway) -> None:
        """Revoking a key id of another organisation changes nothing."""
        dash = sign_in(gateway.url, gateway.orgs["globex"].key)
        answer = dash.post(
            "/dashboard/keys/revoke",
            data={"key_id": gateway.orgs["acme"].key_id,
                  "csrf_token": form_token(dash, "/dashboard/keys")},
        )  # fmt: skip
        assert "No key" in answer.text
        flex_call(gateway, "acme")  # still accepted

    def test_an_org_session_cannot_open_the_operator_page(self, gateway: Gateway) -> None:
        """The operator page redirects an organisation's session to its own overview."""
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        answer = dash.get("/dashboard/operator")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/"


class TestKeysNeverLeak:
    def test_the_key_is_in_no_page_and_no_log(
        self, gateway: Gateway, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After sign-in and a tour of every page, the key appears in no HTML and no log line."""
        key = gateway.orgs["acme"].key
        caplog.set_level(logging.DEBUG)
        flex_call(gateway)
        dash = sign_in(gateway.url, key)
        bodies = [dash.get(path).text for path in PAGES]
        assert all(key not in body for body in bodies)
        assert all(key not in str(cookie) for cookie in dash.cookies.jar)
        assert any(r.name == "flexroute.requests" for r in caplog.records)  # logs were seen
        assert key not in caplog.text


class TestHotPath:
    def test_provider_traffic_never_enters_the_dashboard(
        self, served: tuple[Gateway, ProxyApp]
    ) -> None:
        """Proxied API requests are dispatched without calling the dashboard app at all."""
        calls: list[str] = []
        gateway, app = served
        inner = app.dashboard
        assert inner is not None

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            calls.append(scope["path"])
            await inner(scope, receive, send)

        app.dashboard = counting
        flex_call(gateway)
        httpx.get(f"{gateway.url}/flexroute/v1/health")
        assert calls == []
        httpx.get(f"{gateway.url}/dashboard/signin")
        assert calls == ["/dashboard/signin"]


class TestKeysPage:
    def test_a_new_key_is_shown_once_and_works(self, gateway: Gateway) -> None:
        """The created key is in the POST's answer only; the Keys page never shows it again."""
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        answer = dash.post(
            "/dashboard/keys/create", data={"csrf_token": form_token(dash, "/dashboard/keys")}
        )
        found = re.search(r'id="new-key">(fr_[A-Za-z0-9_-]+)<', answer.text)
        assert found is not None
        new_key = found.group(1)
        assert new_key not in dash.get("/dashboard/keys").text
        assert "location" not in answer.headers  # never redirected with the key in a URL
        flex_call(gateway, "acme")
        reply = gateway.openai(key=new_key).chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.http_response.status_code == 200

    def test_caps_set_in_the_page_apply_to_the_key(self, gateway: Gateway) -> None:
        """A key's spend cap saved in the form is the cap its responses report."""
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        answer = dash.post(
            "/dashboard/keys/caps",
            data={
                "key_id": gateway.orgs["acme"].key_id,
                "spend_cap": "12.50",
                "fee_cap": "",
                "csrf_token": form_token(dash, "/dashboard/keys"),
            },
        )
        assert "Caps of key" in answer.text
        assert 'value="12.5"' in answer.text
        time.sleep(2.2)  # the proxy's view of the caps lives 2 s
        reply = gateway.openai("acme").chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.headers["x-flexroute-spend-cap-usd"] == "12.500000000"

    def test_a_bad_cap_names_the_field_and_the_fix(self, gateway: Gateway) -> None:
        """An amount that is not USD is refused with a message naming the field and the fix."""
        dash = sign_in(gateway.url, gateway.orgs["acme"].key)
        answer = dash.post(
            "/dashboard/keys/caps",
            data={"spend_cap": "lots", "csrf_token": form_token(dash, "/dashboard/keys")},
        )
        assert "spend cap &#39;lots&#39; is not an amount of USD: use e.g. 50" in answer.text
        assert "none</td>" in dash.get("/dashboard/").text  # the org's caps are unchanged


class TestStores:
    def test_a_session_lives_in_either_store(
        self, tmp_path: Path, emulator: Any, store_url: str
    ) -> None:
        """On SQLite and on PostgreSQL: sign in, see every page, sign out."""
        emulator.reset()
        settings = gateway_settings(tmp_path, emulator.base_url, database_url=store_url)
        orgs = seed(settings, ("acme",))
        with serve_in_thread(create_app(settings)) as url:
            client = sign_in(url, orgs["acme"].key)
            assert all(client.get(path).status_code == 200 for path in PAGES)
            client.post("/dashboard/signout", data={"csrf_token": form_token(client, PAGES[0])})
            assert client.get(PAGES[0]).status_code == 303


class TestPackage:
    def test_the_dashboard_imports_on_its_own(self) -> None:
        """A fresh interpreter imports flexroute.dashboard first (no circle through the proxy)."""
        done = subprocess.run(
            [sys.executable, "-c", "import flexroute.dashboard"], capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr.decode()


class TestThrottle:
    def test_failed_sign_ins_are_throttled_per_address(self, gateway: Gateway) -> None:
        """After ten wrong keys in a minute even the right key waits, with Retry-After."""
        client = httpx.Client(base_url=gateway.url)
        for _ in range(10):
            page = client.get("/dashboard/signin")
            wrong = client.post(
                "/dashboard/signin", data={"key": "fr_guess", "csrf_token": token(page.text)}
            )
            assert wrong.status_code == 401
        page = client.get("/dashboard/signin")
        answer = client.post(
            "/dashboard/signin",
            data={"key": gateway.orgs["acme"].key, "csrf_token": token(page.text)},
        )
        assert answer.status_code == 429
        assert 0 < int(answer.headers["retry-after"]) <= 60
        assert "Too many failed sign-ins" in answer.text

    def test_wrong_keys_sent_at_once_are_throttled_too(self, gateway: Gateway) -> None:
        """Forty wrong keys sent at once get at most ten answers; the others wait (429)."""
        page = httpx.get(f"{gateway.url}/dashboard/signin")
        cookies, csrf = dict(page.cookies), token(page.text)

        async def guesses() -> list[int]:
            async with httpx.AsyncClient(base_url=gateway.url, cookies=cookies) as client:

                async def guess(n: int) -> int:
                    data = {"key": f"fr_guess{n}", "csrf_token": csrf}
                    return (await client.post("/dashboard/signin", data=data)).status_code

                return list(await asyncio.gather(*(guess(n) for n in range(40))))

        statuses = asyncio.run(guesses())
        assert statuses.count(401) <= 10, statuses
        assert statuses.count(429) == 40 - statuses.count(401), statuses

    def test_a_flood_of_addresses_does_not_reset_a_throttled_one(self) -> None:
        """When the addresses it remembers are full, a throttled address stays throttled."""
        now = [0.0]
        throttle = Throttle(2, 60.0, clock=lambda: now[0], max_addresses=100)
        throttle.failed("1.2.3.4")
        throttle.failed("1.2.3.4")
        now[0] = 1.0
        for n in range(150):
            throttle.failed(f"10.0.0.{n}")
        assert throttle.wait("1.2.3.4") == 59
        assert len(throttle._failures) <= 100

    def test_a_right_key_is_not_counted_as_a_failure(self) -> None:
        """An attempt counts until it signs in, then not at all."""
        throttle = Throttle(2, 60.0, clock=lambda: 0.0)
        for _ in range(5):
            assert throttle.attempt("1.2.3.4") == 0
            throttle.succeeded("1.2.3.4")
        assert throttle.attempt("1.2.3.4") == 0
        assert throttle.attempt("1.2.3.4") == 0
        assert throttle.attempt("1.2.3.4") == 60

    def test_the_window_ends(self) -> None:
        """A throttled address may try again once its minute is over."""
        now = [0.0]
        throttle = Throttle(2, 60.0, clock=lambda: now[0])
        throttle.failed("1.2.3.4")
        throttle.failed("1.2.3.4")
        assert throttle.wait("1.2.3.4") == 60
        assert throttle.wait("5.6.7.8") == 0
        now[0] = 60.5
        assert throttle.wait("1.2.3.4") == 0

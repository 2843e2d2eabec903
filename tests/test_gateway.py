"""Gateway mode end to end: flexroute keys in, each organisation's own provider key out."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import anyio
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from flexroute.emulator.log import fingerprint
from flexroute.errors import RequestRejected
from flexroute.ledger import open_store
from flexroute.proxy.http import checked_headers
from flexroute.testing import RunningEmulator
from tests.conftest import Proxy
from tests.gateway_env import Gateway, add_key, gateway_settings, revoke_key, running_gateway
from tests.test_ledger_store import fee

MESSAGES: list[Any] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def gateway(tmp_path: Path, emu: RunningEmulator) -> Iterator[Gateway]:
    """Two organisations (acme, globex), free tier with a roomy limit, admin key set."""
    settings = gateway_settings(
        tmp_path, emu.base_url, rate_limits={"free": 50}, admin_key="admin-secret"
    )
    with running_gateway(settings) as running:
        yield running


def upstream_credential(emu: RunningEmulator, request_id: str) -> str:
    [entry] = [e for e in emu.log() if e["client_request_id"] == request_id]
    headers = entry["headers"]
    value: str = (
        headers.get("authorization") or headers.get("x-api-key") or headers["x-goog-api-key"]
    )
    return value.removeprefix("Bearer ")


def fetch(
    url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, dict(error.headers), error.read()
    head = {k.lower(): v for k, v in head.items()}
    return status, head, json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()


def gemini_client(gateway: Gateway, key: str) -> genai.Client:
    return genai.Client(
        api_key=key, http_options=types.HttpOptions(base_url=gateway.url, api_version="v1beta")
    )


def anthropic_client(gateway: Gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0)


class TestKeys:
    def test_openai_request_uses_the_orgs_own_provider_key(
        self, gateway: Gateway, emu: RunningEmulator
    ) -> None:
        """A flexroute key is swapped for its organisation's stored OpenAI key, never another's."""
        for name, org in gateway.orgs.items():
            raw = gateway.openai(name).chat.completions.with_raw_response.create(
                model="gpt-5-mini", messages=MESSAGES
            )
            request_id = raw.headers["x-flexroute-request-id"]
            assert upstream_credential(emu, request_id) == fingerprint(org.provider_keys["openai"])
            record = fetch(f"{gateway.url}/flexroute/v1/requests/{request_id}",
                          {"authorization": f"Bearer {org.key}"})[2]  # fmt: skip
            assert (record["org_id"], record["key_id"]) == (name, org.key_id)

    def test_gemini_and_anthropic_keys_are_swapped_too(
        self, gateway: Gateway, emu: RunningEmulator
    ) -> None:
        """x-goog-api-key, ?key= and x-api-key carry the flexroute key as their SDKs send it."""
        org = gateway.orgs["globex"]
        client = gemini_client(gateway, org.key)
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="hello")
        assert reply.sdk_http_response is not None
        request_id = (reply.sdk_http_response.headers or {})["x-flexroute-request-id"]
        assert upstream_credential(emu, request_id) == fingerprint(org.provider_keys["gemini"])
        body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
        status, head, _ = fetch(
            f"{gateway.url}/v1beta/models/gemini-2.5-flash:generateContent?key={org.key}",
            {"content-type": "application/json"},
            body,
        )
        assert status == 200
        [entry] = [e for e in emu.log() if e["client_request_id"] == head["x-flexroute-request-id"]]
        assert "key=" not in entry["path"]
        assert upstream_credential(emu, head["x-flexroute-request-id"]) == fingerprint(
            org.provider_keys["gemini"]
        )
        message = anthropic_client(gateway, org.key).messages.with_raw_response.create(
            model="claude-opus-5", max_tokens=50, messages=MESSAGES
        )
        request_id = message.headers["x-flexroute-request-id"]
        assert upstream_credential(emu, request_id) == fingerprint(org.provider_keys["anthropic"])

    def test_bad_keys_get_401_in_each_sdks_shape(self, gateway: Gateway, tmp_path: Path) -> None:
        """Missing, unknown and revoked keys are one identical 401; each SDK raises its own."""
        revoked_id, revoked = add_key(gateway.settings, "acme")
        revoke_key(gateway.settings, revoked_id)
        bodies = []
        for key in ("sk-not-flexroute", "fr_unknown" + "x" * 40, revoked):
            with pytest.raises(openai.AuthenticationError) as raised:
                gateway.openai(key=key).chat.completions.create(
                    model="gpt-5-mini", messages=MESSAGES
                )
            bodies.append(raised.value.body)
            with pytest.raises(anthropic.AuthenticationError):
                anthropic_client(gateway, key).messages.create(
                    model="claude-opus-5", max_tokens=5, messages=MESSAGES
                )
            gemini = gemini_client(gateway, key)
            with pytest.raises(genai_errors.ClientError) as gemini_error:
                gemini.models.generate_content(model="gemini-2.5-flash", contents="hi")
            assert gemini_error.value.code == 401
        assert bodies[0] == bodies[1] == bodies[2]
        assert "flexroute API key" in str(bodies[0])

    def test_org_without_a_provider_key_gets_400(
        self, gateway: Gateway, emu: RunningEmulator
    ) -> None:
        """Never another org's key nor the server's: a clear 400 naming the fix."""
        _, key = add_key(gateway.settings, "initech")
        with pytest.raises(openai.BadRequestError) as raised:
            gateway.openai(key=key).chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
        assert raised.value.code == "provider_key_missing"
        assert "flexroute providers set initech openai" in raised.value.message
        assert emu.log() == []


class TestRateLimitHeaders:
    def test_every_response_carries_limits_and_upstream_ones_are_renamed(
        self, gateway: Gateway
    ) -> None:
        """Ours under x-ratelimit-*, the provider's under x-upstream-ratelimit-*, streams too."""
        client = gateway.openai("acme")
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=MESSAGES
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "50"
        assert raw.headers["x-ratelimit-remaining-requests"] == "49"
        reset = int(raw.headers["x-ratelimit-reset-requests"])
        assert time.time() < reset <= time.time() + 60
        assert "x-upstream-ratelimit-limit-tokens" in raw.headers
        with client.chat.completions.with_streaming_response.create(
            model="gpt-5-mini", messages=MESSAGES, stream=True
        ) as stream:
            assert stream.headers["x-ratelimit-remaining-requests"] == "48"
            assert "x-upstream-ratelimit-limit-requests" in stream.headers
            assert list(stream.iter_lines())

    def test_sidecar_mode_passes_provider_limits_through_unchanged(self, proxy: Proxy) -> None:
        """No flexroute keys, no limits: the provider's x-ratelimit-* arrive under their names."""
        raw = proxy.client().chat.completions.with_raw_response.create(
            model="gpt-5-mini", messages=MESSAGES
        )
        assert "x-ratelimit-limit-tokens" in raw.headers
        assert not any(name.startswith("x-upstream-") for name in raw.headers)

    def test_over_the_limit_is_429_with_retry_after(
        self, tmp_path: Path, emu: RunningEmulator
    ) -> None:
        """The limit+1st request in a window is a retryable 429 in the endpoint's dialect."""
        settings = gateway_settings(tmp_path, emu.base_url, rate_limits={"free": 2})
        with running_gateway(settings, ("acme",)) as gateway:
            client = gateway.openai("acme")
            for _ in range(2):
                client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
            with pytest.raises(openai.RateLimitError) as raised:
                client.chat.completions.create(model="gpt-5-mini", messages=MESSAGES)
            headers = raised.value.response.headers
            assert 1 <= int(headers["retry-after"]) <= 60
            assert headers["x-ratelimit-remaining-requests"] == "0"
            assert headers["x-should-retry"] == "true"  # SPEC §8: safe, nothing was billed
            with pytest.raises(anthropic.RateLimitError):
                anthropic_client(gateway, gateway.orgs["acme"].key).messages.create(
                    model="claude-opus-5", max_tokens=5, messages=MESSAGES
                )


class TestIsolation:
    ROUTES = ("requests/own", "requests/other", "usage", "health", "metrics")

    @pytest.mark.parametrize("route", ROUTES)
    def test_every_route_shows_each_org_only_its_own_data(
        self, gateway: Gateway, route: str
    ) -> None:
        """Each org's key × each /flexroute/v1/ route: own data only; others' ids are 404."""
        ids = {}
        for name in gateway.orgs:
            raw = gateway.openai(name).chat.completions.with_raw_response.create(
                model="gpt-5-mini", messages=MESSAGES
            )
            ids[name] = raw.headers["x-flexroute-request-id"]
        for name, org in gateway.orgs.items():
            auth = {"authorization": f"Bearer {org.key}"}
            other = next(n for n in gateway.orgs if n != name)
            if route == "requests/own":
                status, _, body = fetch(f"{gateway.url}/flexroute/v1/requests/{ids[name]}", auth)
                assert (status, body["org_id"]) == (200, name)
            elif route == "requests/other":
                status, _, body = fetch(f"{gateway.url}/flexroute/v1/requests/{ids[other]}", auth)
                assert status == 404
                assert other not in json.dumps(body)
            elif route == "usage":
                url = f"{gateway.url}/flexroute/v1/usage?org={other}"
                status, _, body = fetch(url, auth)
                assert status == 200
                assert sum(row["requests"] for row in body["data"]) == 1
            elif route == "health":
                assert fetch(f"{gateway.url}/flexroute/v1/health", auth)[0] == 200
            else:
                assert fetch(f"{gateway.url}/metrics", auth)[0] == 401
        path = {"requests/own": f"/flexroute/v1/requests/{ids['acme']}",
                "requests/other": f"/flexroute/v1/requests/{ids['globex']}",
                "usage": "/flexroute/v1/usage", "health": "/flexroute/v1/health",
                "metrics": "/metrics"}[route]  # fmt: skip
        assert fetch(gateway.url + path)[0] == (200 if route == "health" else 401)

    def test_metrics_need_the_admin_key(self, gateway: Gateway) -> None:
        """GET /metrics answers the admin key only, and counts refusals."""
        status, _, body = fetch(f"{gateway.url}/metrics", {"authorization": "Bearer admin-secret"})
        assert status == 200
        assert "flexroute_unauthorized_total" in body


class TestHygiene:
    def test_line_breaks_in_header_values_are_400(self) -> None:
        """CR, LF or NUL in a header value is refused before anything else reads it."""
        for bad in ("a\r\nx-injected: 1", "a\nb", "a\x00b"):
            with pytest.raises(RequestRejected) as raised:
                checked_headers([("x-note", bad)])
            assert (raised.value.status, raised.value.param) == (400, "x-note")
        assert checked_headers([("x-note", "fine")]) == [("x-note", "fine")]

    def test_oversized_headers_are_431_and_connection_named_headers_dropped(
        self, gateway: Gateway, emu: RunningEmulator
    ) -> None:
        """Headers past the limit are refused; headers named by Connection never go upstream."""
        auth = {"authorization": f"Bearer {gateway.orgs['acme'].key}",
                "content-type": "application/json"}  # fmt: skip
        body = json.dumps({"model": "gpt-5-mini", "messages": MESSAGES}).encode()
        big = {**auth, **{f"x-pad-{i}": "p" * 1000 for i in range(40)}}
        status, _, error = fetch(f"{gateway.url}/v1/chat/completions", big, body)
        assert status == 431
        assert error["error"]["code"] == "headers_too_large"
        host, port = gateway.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body,
            {**auth, "connection": "keep-alive, x-secret-hop", "x-secret-hop": "1"},
        )
        response = conn.getresponse()
        response.read()
        conn.close()
        assert response.status == 200
        request_id = response.headers["x-flexroute-request-id"]
        [entry] = [e for e in emu.log() if e["client_request_id"] == request_id]
        assert "x-secret-hop" not in entry["headers"]


class TestTiers:
    def test_paid_spend_raises_the_tier_and_its_limit(
        self, tmp_path: Path, emu: RunningEmulator
    ) -> None:
        """An org whose paid invoices reach the threshold gets the higher tier's limit."""
        settings = gateway_settings(
            tmp_path,
            emu.base_url,
            rate_limits={"free": 5, "elevated": 7},
            tier_thresholds={"elevated": "1"},
        )

        async def pay(org: str) -> None:
            store = open_store(settings.database_url)
            try:
                await store.record(fee("frq_paid", org, "2"))
                invoice = await store.claim_invoice(
                    org, "2026-11", dt.datetime(2026, 12, 1, tzinfo=dt.UTC), Decimal(0)
                )
                assert invoice is not None
                await store.settle_invoice(invoice.invoice_id, "paid", None, "ref")
            finally:
                await store.aclose()

        anyio.run(pay, "acme")
        with running_gateway(settings) as gateway:
            for name, limit in (("acme", "7"), ("globex", "5")):
                raw = gateway.openai(name).chat.completions.with_raw_response.create(
                    model="gpt-5-mini", messages=MESSAGES
                )
                assert raw.headers["x-ratelimit-limit-requests"] == limit

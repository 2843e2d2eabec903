"""Hostile input never stops the proxy: a clear 400 in the endpoint's dialect for what the
client got wrong, and a ledger that keeps writing whatever a record holds (issue 11, items
1 and 2)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from flexroute.proxy import create_app
from flexroute.testing import serve_in_thread
from tests.conftest import Proxy, make_settings

HI: list[Any] = [{"role": "user", "content": "hi"}]


def post(url: str, path: str, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """A raw POST (http.client sends repeated headers as given)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=20)
    try:
        conn.putrequest("POST", path)
        for name, value in [("content-type", "application/json"), *headers]:
            conn.putheader(name, value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def proxy_on(tmp_path: Path, emulator: Any, store_url: str) -> Iterator[Proxy]:
    """The proxy with its ledger on SQLite, then on the real PostgreSQL."""
    emulator.reset()
    settings = make_settings(tmp_path, emulator.base_url, database_url=store_url)
    with serve_in_thread(create_app(settings)) as url:
        yield Proxy(url, settings)


class TestBadInputIsA400:
    def test_a_400_digit_start_within(self, proxy: Proxy, emulator: Any) -> None:
        """A number too large for a float is a 400 naming start_within, not a 500."""
        with pytest.raises(openai.BadRequestError) as raised:
            proxy.client().chat.completions.create(
                model="gpt-5-mini", messages=HI, extra_body={"start_within": 10**400}
            )
        assert raised.value.param == "start_within"
        assert "Invalid start_within" in raised.value.message
        assert len(raised.value.message) < 400  # the value is quoted, shortened
        assert emulator.log() == []

    def test_json_nested_fifty_thousand_levels(self, proxy: Proxy, emulator: Any) -> None:
        """A body too deep to parse is a 400 saying so."""
        body = b'{"model":"gpt-5-mini","messages":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
        status, reply = post(proxy.url, "/v1/chat/completions", body, [])
        assert status == 400
        assert reply["error"]["code"] == "invalid_json"
        assert "nested too deeply" in reply["error"]["message"]
        assert emulator.log() == []

    def test_two_different_start_within_headers(self, proxy: Proxy, emulator: Any) -> None:
        """x-flex-start-within twice with different values is a conflict, not a guess."""
        body = json.dumps({"model": "gpt-5-mini", "messages": HI}).encode()
        headers = [("x-flex-start-within", "5s"), ("x-flex-start-within", "10m")]
        status, reply = post(proxy.url, "/v1/chat/completions", body, headers)
        assert status == 400
        assert reply["error"]["param"] == "x-flex-start-within"
        assert "'10m'" in reply["error"]["message"]
        assert emulator.log() == []

    def test_the_same_header_twice_is_fine(self, proxy: Proxy) -> None:
        """Repeating the same value is no conflict."""
        body = json.dumps({"model": "gpt-5-mini", "messages": HI}).encode()
        headers = [("x-flex-start-within", "5s"), ("x-flex-start-within", "5s")]
        status, _ = post(proxy.url, "/v1/chat/completions", body, headers)
        assert status == 200


class TestTheLedgerKeepsWriting:
    def test_a_lone_surrogate_in_the_model_name(self, proxy_on: Proxy) -> None:
        """ "\\ud800" in model and service_tier is stored (as "?") and the next request works."""
        body = b'{"model":"gpt-\\ud800","service_tier":"\\ud800","messages":[]}'
        status, _ = post(proxy_on.url, "/v1/chat/completions", body, [])
        assert status < 500
        for _ in range(2):
            raw = proxy_on.client().chat.completions.with_raw_response.create(
                model="gpt-5-mini", messages=HI, extra_body={"start_within": "5s"}
            )
            record = proxy_on.record(raw.headers["x-flexroute-request-id"])
            assert (record["status"], record["route"]) == ("ok", "flex")

    def test_a_usage_count_beyond_any_money_column(self, proxy_on: Proxy) -> None:
        """A forged usage figure is the provider's malformed answer (issue 11 item 3): a 502
        in the dialect, an ``upstream_error`` record without cost or fee; the writer survives."""
        client = proxy_on.client()
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(
                model="gpt-5-mini",
                messages=HI,
                extra_body={"start_within": "5s"},
                extra_headers={"x-emulator": f"prompt_tokens={10**22}"},
            )
        assert (raised.value.status_code, raised.value.code) == (502, "upstream_malformed_response")
        assert "prompt_tokens" in raised.value.message
        record = proxy_on.record(raised.value.response.headers["x-flexroute-request-id"])
        assert record["status"] == "upstream_error"
        assert (record["cost_usd"], record["fee_usd"]) == (None, "0.000000000")
        after = client.chat.completions.with_raw_response.create(model="gpt-5-mini", messages=HI)
        assert proxy_on.record(after.headers["x-flexroute-request-id"])["status"] == "ok"

"""The real google-genai and anthropic SDKs → proxy → emulator (SPEC §2 rows for both)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anthropic
import anyio
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from flexroute.catalog import default_catalog
from flexroute.fees import compute_charge
from flexroute.usage import Tier, Usage
from tests.conftest import Proxy, attempts

MODEL = "gemini-2.5-flash"


def gemini(proxy: Proxy) -> genai.Client:
    return genai.Client(
        api_key="test-gemini-key",
        http_options=types.HttpOptions(base_url=proxy.url, api_version="v1beta"),
    )


def config(
    emulator: str, start_within: str | None = None, **extra: Any
) -> types.GenerateContentConfig:
    headers = {"x-emulator": emulator}
    if start_within is not None:
        headers["x-flex-start-within"] = start_within
    return types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers), **extra)


def headers_of(response: types.GenerateContentResponse) -> dict[str, str]:
    assert response.sdk_http_response is not None
    return dict(response.sdk_http_response.headers or {})


class TestGemini:
    def test_flex_is_served_with_the_fee(self, proxy: Proxy, emulator: Any) -> None:
        """A Gemini flex request that starts in time: flex tier, fee 20% of the saving."""
        client = gemini(proxy)
        response = client.models.generate_content(
            model=MODEL, contents="hello", config=config("flex_queue=0.05;prompt_tokens=800", "2s")
        )
        assert response.text
        headers = headers_of(response)
        assert headers["x-flexroute-route"] == "flex"
        assert headers["x-flexroute-tier"] == "flex"
        meta = response.usage_metadata
        assert meta is not None
        usage = Usage(
            input_tokens=meta.prompt_token_count or 0,
            output_tokens=(meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0),
            cached_input_tokens=meta.cached_content_token_count or 0,
        )
        prices = default_catalog().lookup("gemini", MODEL)
        assert prices is not None
        charge = compute_charge(
            prices.cost(Tier.STANDARD, usage), prices.cost(Tier.FLEX, usage), billable=True
        )
        assert Decimal(headers["x-flexroute-fee-usd"]) == charge.fee > 0
        [attempt] = attempts(emulator, headers["x-flexroute-request-id"])
        assert ":streamGenerateContent" in attempt["path"]
        assert json.loads(attempt["raw_body"])["serviceTier"] == "flex"
        assert "x-server-timeout" in attempt["headers"]

    def test_falls_back_after_repeated_503s_at_the_deadline(
        self, proxy: Proxy, emulator: Any
    ) -> None:
        """Flex refused with 503 UNAVAILABLE until the deadline: the standard tier answers."""
        client = gemini(proxy)
        response = client.models.generate_content(
            model=MODEL,
            contents="hello",
            config=config("flex_refuse=always;refuse_status=503;retry_after=0.1", "600ms"),
        )
        headers = headers_of(response)
        assert headers["x-flexroute-route"] == "fallback"
        assert headers["x-flexroute-tier"] == "standard"
        assert Decimal(headers["x-flexroute-fee-usd"]) == 0
        seen = attempts(emulator, headers["x-flexroute-request-id"])
        assert len(seen) >= 3
        assert all(e["status"] == 503 for e in seen[:-1])
        assert json.loads(seen[-1]["raw_body"])["serviceTier"] == "standard"

    def test_streaming_flex_and_async_client(self, proxy: Proxy) -> None:
        """generate_content_stream and the .aio client take the same route."""
        client = gemini(proxy)
        chunks = list(
            client.models.generate_content_stream(
                model=MODEL, contents="hello", config=config("flex_queue=0.05;tokens=5", "2s")
            )
        )
        assert "".join(c.text or "" for c in chunks)
        assert headers_of(chunks[0])["x-flexroute-route"] == "flex"

        async def main() -> str:
            client = gemini(proxy)
            response = await client.aio.models.generate_content(
                model=MODEL, contents="hi", config=config("flex_queue=5", "300ms")
            )
            return headers_of(response)["x-flexroute-route"]

        assert anyio.run(main) == "fallback"

    def test_long_prompts_reprice_the_whole_request(self, proxy: Proxy) -> None:
        """A Pro prompt above 200k tokens is priced at the long-context rates, flex at half."""
        client = gemini(proxy)
        response = client.models.generate_content(
            model="gemini-2.5-pro",
            contents="long",
            config=config("flex_queue=0.01;prompt_tokens=250000", "2s"),
        )
        headers = headers_of(response)
        record = proxy.record(headers["x-flexroute-request-id"])
        prices = default_catalog().lookup("gemini", "gemini-2.5-pro")
        assert prices is not None
        usage = Usage(**record["usage"])
        assert usage.input_tokens == 250000
        long_rate = prices.long_context_tiers[Tier.STANDARD]
        assert Decimal(record["standard_cost_usd"]) == prices.cost(Tier.STANDARD, usage)
        assert Decimal(record["standard_cost_usd"]) >= long_rate.input * 250000 / 1_000_000
        assert Decimal(record["cost_usd"]) * 2 == Decimal(record["standard_cost_usd"])

    def test_a_bad_start_within_raises_the_sdks_client_error(self, proxy: Proxy) -> None:
        """flexroute's 400 comes back in Google's error shape."""
        client = gemini(proxy)
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(model=MODEL, contents="x", config=config("", "soon"))
        assert caught.value.code == 400
        assert "soon" in str(caught.value)

    def test_passthrough_without_start_within(self, proxy: Proxy, emulator: Any) -> None:
        """No budget: one request, forwarded as sent, no fee."""
        client = gemini(proxy)
        response = client.models.generate_content(
            model=MODEL, contents="hi", config=config("", service_tier="priority")
        )
        headers = headers_of(response)
        assert headers["x-flexroute-route"] == "passthrough"
        assert len(attempts(emulator, headers["x-flexroute-request-id"])) == 1


def claude(proxy: Proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test", base_url=proxy.url, max_retries=0)


class TestAnthropic:
    @pytest.mark.parametrize("start_within", [None, "5s"])
    def test_claude_is_passed_through_with_cost_and_no_fee(
        self, proxy: Proxy, emulator: Any, start_within: str | None
    ) -> None:
        """With or without start_within: one request, start_within removed, cost recorded, fee 0."""
        extra = {} if start_within is None else {"start_within": start_within}
        raw = claude(proxy).messages.with_raw_response.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            service_tier="standard_only",
            messages=[{"role": "user", "content": "hi"}],
            extra_body=extra,
            extra_headers={"x-emulator": "prompt_tokens=500"},
        )
        message = raw.parse()
        assert message.content
        assert raw.headers["x-flexroute-route"] == "passthrough"
        if start_within is not None:
            assert raw.headers["x-flexroute-reason"] == "anthropic-proxy-only"
        assert Decimal(raw.headers["x-flexroute-fee-usd"]) == 0
        assert Decimal(raw.headers["x-flexroute-cost-usd"]) > 0
        [attempt] = attempts(emulator, raw.headers["x-flexroute-request-id"])
        sent = json.loads(attempt["raw_body"])
        assert "start_within" not in sent
        assert sent["service_tier"] == "standard_only"

    def test_claude_streams_record_usage(self, proxy: Proxy) -> None:
        """A streamed Claude answer arrives whole; its usage and cost reach the ledger."""
        client = claude(proxy)
        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"start_within": "1s"},
        ) as stream:
            text = "".join(stream.text_stream)
            request_id = stream.response.headers["x-flexroute-request-id"]
        assert text
        record = proxy.record(request_id)
        assert record["route"] == "passthrough"
        assert record["usage"]["output_tokens"] > 0
        assert Decimal(record["cost_usd"]) > 0
        assert record["fee_usd"] == "0.000000000"

    def test_async_claude_and_overloaded_errors(self, proxy: Proxy) -> None:
        """A 529 overloaded_error reaches the async SDK as its own exception, not retried."""

        async def main() -> None:
            client = anthropic.AsyncAnthropic(api_key="k", base_url=proxy.url, max_retries=0)
            with pytest.raises(anthropic.InternalServerError) as caught:
                await client.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=8,
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-emulator": "status=529"},
                )
            assert caught.value.status_code == 529
            await client.close()

        anyio.run(main)
